print("podnetd: not built yet")
