#!/usr/bin/python3
"""A D-Bus client for tests/bus/test_polkit.py, run as the unprivileged test user (setpriv).

  pk_call.py ADDRESS call DEST PATH IFACE METHOD ARGS_JSON
      One call; prints "ok" or the error name and message. ARGS_JSON is a list of [type, value]
      with type s, b, u, i, as or h (value: a file opened read-only and passed as the fd).
  pk_call.py ADDRESS disconnect|ping-disconnect N DEST PATH IFACE METHOD ARGS_JSON
      N times: a new connection sends the call and closes, never reading the reply. "disconnect"
      closes at once (the caller may be gone before machd reads the call); "ping-disconnect" first
      pings DEST (Peer.Ping, answered after the call was processed: machd has asked polkit by then)
      and closes while polkit decides. Prints the number of calls sent.
"""
import json
import os
import sys

import dbus
import dbus.lowlevel


def convert(args):
    out = []
    for t, v in args:
        if t == "s":
            out.append(dbus.String(v))
        elif t == "b":
            out.append(dbus.Boolean(v))
        elif t == "u":
            out.append(dbus.UInt32(v))
        elif t == "i":
            out.append(dbus.Int32(v))
        elif t == "as":
            out.append(dbus.Array(v, signature="s"))
        elif t == "h":
            out.append(dbus.types.UnixFd(os.open(v, os.O_RDONLY | os.O_CLOEXEC)))
        else:
            raise SystemExit("unknown type " + t)
    return out


def main():
    address, mode = sys.argv[1], sys.argv[2]
    if mode == "call":
        dest, path, iface, method, args = sys.argv[3:8]
        conn = dbus.bus.BusConnection(address)
        try:
            conn.call_blocking(dest, path, iface, method, None, convert(json.loads(args)), timeout=60)
            print("ok")
        except dbus.exceptions.DBusException as e:
            print(e.get_dbus_name(), e.get_dbus_message())
        return
    if mode in ("disconnect", "ping-disconnect"):
        n = int(sys.argv[3])
        dest, path, iface, method, args = sys.argv[4:9]
        values = convert(json.loads(args))
        for _ in range(n):
            conn = dbus.bus.BusConnection(address)
            msg = dbus.lowlevel.MethodCallMessage(dest, path, iface, method)
            msg.append(*values)
            conn.send_message(msg)
            if mode == "ping-disconnect":
                conn.call_blocking(dest, "/", "org.freedesktop.DBus.Peer", "Ping", "", [], timeout=60)
            conn.flush()
            conn.close()
        print(n)
        return
    raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
