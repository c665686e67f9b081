#define _GNU_SOURCE
#include <sched.h>
#include <sys/vfs.h>
#include "cnetns.h"

int podnet_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int64_t podnet_fs_magic(int fd) {
    struct statfs st;
    if (fstatfs(fd, &st) != 0) return -1;
    return (int64_t)st.f_type;
}
