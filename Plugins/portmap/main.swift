print("portmap: not built yet")
