// glibc declarations the Swift Glibc module does not offer (headers only, nothing to link):
// - <sys/xattr.h> for the module builder, which writes trusted.overlay.* xattrs on skeleton files, and the agent,
//   which reads them back from mounted images;
// - setns(2)/unshare(2) (declared by glibc only under _GNU_SOURCE) as thin syscall wrappers, for the agent making
//   module mounts inside a service manager's mount namespace;
// - syncfs(2)/sync_file_range(2) (also _GNU_SOURCE only), for the agent's object store making a batch of fetched
//   files durable with one flush;
// - pipe2(2) and statfs(2), see below.
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MUSTER_CLONE_FS 0x00000200
#define MUSTER_CLONE_NEWNS 0x00020000

static inline int muster_setns(int fd, int nstype) { return (int)syscall(SYS_setns, fd, nstype); }
static inline int muster_unshare(int flags) { return (int)syscall(SYS_unshare, flags); }

#define MUSTER_SYNC_FILE_RANGE_WRITE 2

static inline int muster_syncfs(int fd) { return (int)syscall(SYS_syncfs, fd); }
static inline int muster_sync_file_range(int fd, long long offset, long long nbytes, unsigned int flags) {
    return (int)syscall(SYS_sync_file_range, fd, offset, nbytes, flags);
}

// pipe2(2) (_GNU_SOURCE only), for the agent's rsync lanes: their file lists go through close-on-exec pipes, so that
// no other child inherits a write end and keeps a list from ending.
static inline int muster_pipe_cloexec(int fds[2]) { return (int)syscall(SYS_pipe2, fds, 02000000 /* O_CLOEXEC */); }

// statfs(2)'s f_type (<sys/vfs.h> is not in the Glibc module), for the sync journal telling local filesystems (whose
// timestamps come from this machine's clock) from network ones; -1 with errno on failure.
#include <sys/vfs.h>
static inline long long muster_filesystem_type(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return (long long)info.f_type;
}
