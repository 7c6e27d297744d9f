#!/bin/sh
# A short tour of what a program sees in the sandbox (run it with `appvirt run -- sh tour.sh`).
echo "hello from $(uname -s) as $(id -un), in $(pwd)"
echo "the host's hostname file says: $(cat /etc/hostname)"
echo "files in /etc: $(ls /etc | wc -l)"
echo "appvirt was here" > /etc/appvirt-tour && echo "wrote /etc/appvirt-tour: $(cat /etc/appvirt-tour)"
rm /etc/hostname && echo "deleted /etc/hostname; files in /etc now: $(ls /etc | wc -l)"
( sleep 0.1; echo "a child process ran too" ) &
wait
echo "all of this happened in the app's overlay: the host's /etc is unchanged"
