#!/bin/sh
# A short tour of what a program sees in the sandbox (run it with `appvirt run -- sh tour.sh`).
echo "hello from $(uname -s) as $(id -un), in $(pwd)"
echo "the host's hostname file says: $(cat /etc/hostname)"
echo "files in /etc: $(ls /etc | wc -l)"
if (echo "change" > /etc/appvirt-tour) 2>/dev/null; then
    echo "wrote /etc/appvirt-tour"
else
    echo "writing /etc/appvirt-tour was refused: the host is read-only here"
fi
rm -f /etc/hostname 2>/dev/null || echo "deleting /etc/hostname was refused"
( sleep 0.1; echo "a child process ran too" ) &
wait
exit 0
