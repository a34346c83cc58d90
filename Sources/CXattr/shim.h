// <sys/xattr.h> for the module builder, which writes trusted.overlay.* xattrs on skeleton files
// (the Glibc Swift module does not include this header). Part of glibc: nothing to link.
#include <sys/xattr.h>
