// The libnl-route-3 headers podnet's Netlink module uses. Only Sources/Netlink imports this module.
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <netlink/cache.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/link/ipip.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <netlink/route/neighbour.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <linux/neighbour.h>
