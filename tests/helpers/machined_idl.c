/* Prints the interface description that systemd's own machined serves, from the tree's
 * libsystemd-shared (the same data systemd-machined links): the reference for machd's Varlink
 * introspection test. Built and run by tests/bus/test_varlink.py against the sid tree's loader.
 *   machined_idl Machine|MachineImage|service */
#include <stdio.h>
#include <string.h>

extern const char vl_interface_io_systemd_Machine[], vl_interface_io_systemd_MachineImage[],
        vl_interface_org_varlink_service[];
int sd_varlink_idl_format(const void *iface, char **ret);

int main(int argc, char **argv) {
        const void *iface = NULL;
        char *s = NULL;
        if (argc != 2)
                return 2;
        if (strcmp(argv[1], "Machine") == 0)
                iface = vl_interface_io_systemd_Machine;
        else if (strcmp(argv[1], "MachineImage") == 0)
                iface = vl_interface_io_systemd_MachineImage;
        else if (strcmp(argv[1], "service") == 0)
                iface = vl_interface_org_varlink_service;
        else
                return 2;
        if (sd_varlink_idl_format(iface, &s) < 0)
                return 1;
        fputs(s, stdout);
        return 0;
}
