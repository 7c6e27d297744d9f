/* demo_module: the shape of a kernel module, for loading into appvirt's virtual machine.
 *
 *   cc -c -o appvirt_demo.ko demo_apps/demo_module.c
 *
 * An x86-64 relocatable ELF object with the two sections a module loader looks for first:
 * `.modinfo` (tags, among them the module's name) and `.gnu.linkonce.this_module` (struct
 * module). A real kernel would reject it (no symbols, no init); under `modules: virtual`
 * appvirt records it as loaded, and it never reaches the kernel.
 */
__attribute__((section(".modinfo"), used, aligned(1)))
static const char modinfo[] =
    "license=GPL\0"
    "description=appvirt demo module\0"
    "parm=greeting:what to say (charp)\0"
    "name=appvirt_demo\0"
    "vermagic=appvirt\0";

/* struct module; its name field (offset 24 on x86-64) is the loader's fallback */
__attribute__((section(".gnu.linkonce.this_module"), used, aligned(64)))
static char this_module[1024] = {
    [24] = 'a', 'p', 'p', 'v', 'i', 'r', 't', '_', 'd', 'e', 'm', 'o',
};
