print("flannel: not built yet")
