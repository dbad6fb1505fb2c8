

def test_host_is_listed(bus, machd):
    data = bus.call_json("ListMachines")
    assert [".host", "host", "", "/org/freedesktop/machine1/machine/_2ehost"] in data[0]
