// Glibc declares setns(2) and the nsfs magic only under _GNU_SOURCE, which Swift's Glibc module
// is built without; these two wrappers are compiled with it.
#pragma once
#include <stdint.h>

/// setns(fd, CLONE_NEWNET). Returns 0, or -1 with errno set.
int podnet_setns_net(int fd);

/// The file system magic (statfs.f_type) of the file behind fd, or -1 with errno set.
int64_t podnet_fs_magic(int fd);
