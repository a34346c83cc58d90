// glibc declarations the Swift Glibc module does not offer (headers only, nothing to link):
// - <sys/xattr.h> for the module builder, which writes trusted.overlay.* xattrs on skeleton files, and the agent,
//   which reads them back from mounted images;
// - setns(2)/unshare(2) (declared by glibc only under _GNU_SOURCE) as thin syscall wrappers, for the agent making
//   module mounts inside a service manager's mount namespace.
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MUSTER_CLONE_FS 0x00000200
#define MUSTER_CLONE_NEWNS 0x00020000

static inline int muster_setns(int fd, int nstype) { return (int)syscall(SYS_setns, fd, nstype); }
static inline int muster_unshare(int flags) { return (int)syscall(SYS_unshare, flags); }
