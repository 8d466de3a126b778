/*
 * parjobs.ops._fastcopy: copy many small files in one call, compare them, and remove a
 * move's sources, without the GIL.
 *
 * The same protocol as `_copy_one_shot` in _copyfile.py, item by item: open the source
 * (O_NOFOLLOW|O_NONBLOCK, regular files only; with OWNED and NO_XATTRS, a move's, only
 * this process' user's and group's, without extended attributes), create a hidden
 * temporary next to the destination (O_EXCL|O_NOFOLLOW) named as `tmp_name` in
 * _partials.py names it,
 * ``.<name>.<owner token>.<16 random hex>`` TMP_SUFFIX (the token is passed in), reflink or
 * copy_file_range (read/write where those do not apply), check that the source's size,
 * mtime and ctime did not move, with COPY_COMPARE compare the temporary's bytes with the source's
 * (copy --verify: checked before it takes the final name), set mode (with its access ACL) and times, fsync it when asked (FSYNC: a durable copy; all
 * of a group's files are written before the first fsync, and the caller syncs each directory
 * once), then renameat2(RENAME_NOREPLACE) onto the final name. The constants both sides
 * must agree on (TMP_SUFFIX, NAME_MAX, RENAME_NOREPLACE, the fallback and no-reflink errno
 * sets, flags and result codes) are exported by this module; _smallfiles.py refuses a build
 * whose constants differ from the Python copier's. Whatever goes wrong, the temporary is
 * removed and the item is reported back with its errno, untouched at the destination: the
 * Python path then runs it again and deals with it (conflicts, retries, clear errors).
 *
 * unlink_many removes a move's sources once their copies are in place and on disk: each
 * copy's name must still hold the file written (inode), each source must still be the file
 * copied (device, inode, size, mtime; ctime while its link count is the same), else it is
 * kept.
 *
 * Why C: a Python loop making these ~10 system calls per file spends as long in the
 * interpreter as in the kernel, holding the GIL the job's bookkeeping needs. Here one call
 * releases the GIL for a whole group of files.
 *
 * Optional: without a C compiler the package installs without it and copies in Python.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "_pyc_common.h"

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1
#endif

#define NAME_MAX_BYTES 255
#define TMP_SUFFIX ".parjobs-tmp" /* exported: _smallfiles.py refuses a build that differs */
#define TOKEN_MAX 64
#define FC_OPEN_MAX 32 /* durable: written temporaries a group keeps open before landing them */

/* Flags (exported: MODE, TIMES, REFLINK, RANGE, LSTAT, FSYNC, COPY_COMPARE, OWNED, NO_XATTRS,
   SOURCES). */
#define FC_MODE 1    /* set the source's mode bits */
#define FC_TIMES 2   /* set the source's atime and mtime */
#define FC_REFLINK 4 /* try FICLONE first */
#define FC_LSTAT 8   /* lstat before opening (the caller's stat is old): never open a device */
#define FC_FSYNC 16  /* fsync each copy before its rename (durable; the caller syncs dirs) */
#define FC_COMPARE 32 /* compare each written temporary with its source before its rename */
#define FC_RANGE 64   /* try copy_file_range (else read/write straight away) */
#define FC_OWNED 128  /* take only sources of this process' user and group (a move: the */
                      /* copy, made by this process, carries no other owner) */
#define FC_NO_XATTRS 256 /* take only sources without extended attributes (a move keeping */
                         /* them: the group path does not copy them) */
#define FC_SOURCES 512 /* return each source's (size, mtime_ns, dev, ino, ctime_ns, nlink) as */
                       /* copied (a move */
                       /* unlinks a source only while it is still that file) */

/* Result codes besides 0 (done) and a positive errno. */
#define FC_NOT_REGULAR (-1) /* not a regular file: the Python path reports it */
#define FC_CHANGED (-2)     /* the source changed while being copied */
#define FC_TOO_BIG (-3)     /* larger than max_size now: the chunked Python path copies it */
#define FC_NO_REFLINK (-4)  /* only in the "refused" outputs: FICLONE (or copy_file_range) */
                            /* is refused for good */
#define FC_SPARSE (-5)      /* has holes: the Python path copies its data extents only */
#define FC_NOT_PLAIN (-8)   /* OWNED, NO_XATTRS: an owner or attributes to carry; or times past
                               2262 (Python does) */

/* More result codes (exported). */
#define FV_MISMATCH (-6) /* copy_many, COPY_COMPARE: the copy's bytes differ from the source's */
#define FV_NOT_OURS (-7) /* unlink_many: the copy's name no longer holds the copy written */

/* A comparison reads this much of each side at a time (exported: same_content reads so). */
#define COMPARE_CHUNK (1 << 20)

/* The calling convention: 2 returns each copy's (size, mtime_ns, ino) too; 3 gives
   unlink_many each source's (path, size, mtime_ns); 4 has copy_many take RANGE and say
   whether copy_file_range was refused for good; 5 has it take OWNED and NO_XATTRS; 6 gives
   unlink_many each source's (path, size, mtime_ns, dev, ino), exact ints only; 7 has copy_many
   take SOURCES and return each source's identity as it was copied; 8 drops verify_many (its
   COMPARE and SYNC had no caller since a move's copies are compared and fsynced in copy_many)
   and has unlink_many check each copy's name first, given (..., dir fd, name, inode); 9 takes
   a source as its directory's fd and its name too (copy_many: (src dir fd, src name, dir fd,
   name); unlink_many: a ninth field, the source's dir fd), so a directory swapped for a
   symlink after the walk is never followed (_srctree); a path still works as before; 10 has
   SOURCES return each source's (size, mtime_ns, dev, ino, ctime_ns, nlink) and unlink_many
   take those two after the ninth field (an eleventh form), so a source saved in place with
   its mtime put back since it was copied is kept; 11 has MODE keep the source's access ACL
   (or narrow the group bits where the destination cannot hold it), and copy_many hand back
   (NOT_PLAIN) a source whose mtime or ctime does not fit 64-bit nanoseconds (past 2262). */
#define FC_API 11

typedef struct {
    int src_dir_fd;  /* the source's directory (AT_FDCWD: src is a path) */
    const char *src; /* its name in src_dir_fd */
    int dir_fd;
    const char *name;
    Py_ssize_t name_len;
    int result;
    long long size;
    long long mtime_ns; /* the copy's identity, read from its descriptor once written */
    unsigned long long ino;
    /* the source's identity, from its descriptor: what was copied (its size and mtime the
       same before and after the copy) */
    long long src_size, src_mtime_ns, src_ctime_ns;
    unsigned long long src_dev, src_ino, src_nlink;
    int out;                       /* the written temporary, open until it lands (or -1) */
    char tmp[NAME_MAX_BYTES + 1];  /* its name in dir_fd */
} item_t;

static __thread uint64_t rng_state; /* per thread: calls run in several threads at once */

static uint64_t next_token(void) {
    /* xorshift64*: the token only has to avoid collisions (the create is O_EXCL). */
    if (rng_state == 0 &&
        (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state || rng_state == 0))
        rng_state = ((uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&rng_state) | 1;
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* "This kernel fast path does not apply here": try the next method (exported). */
static const int fallback_errnos[] = {EXDEV, EINVAL, ENOSYS, EOPNOTSUPP, ENOTSUP,
                                      EBADF, ENOTTY, EPERM};
/* FICLONE and copy_file_range errors that hold for every file of a (source fs, destination fs)
   pair (exported): e.g. EXDEV between filesystems that cannot copy to each other. */
static const int no_reflink_errnos[] = {EXDEV, EOPNOTSUPP, ENOTSUP, ENOTTY, ENOSYS};

static int in_set(int err, const int *set, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (set[i] == err)
            return 1;
    return 0;
}

static int is_fallback(int err) { return in_set(err, fallback_errnos, COUNT(fallback_errnos)); }

/* Copy size bytes from fd to out at offset 0; 0 or an errno, FC_CHANGED if the source ends
 * early. *reflink and *range: 1 to try FICLONE and copy_file_range, set to FC_NO_REFLINK
 * when the pair of filesystems refuses it for good (the rest of the call goes without it). */
static int copy_data(int fd, int out, long long size, int *reflink, int *range) {
    if (size == 0) { /* a pseudo-file (/proc) says 0 and reads more: the Python path refuses it */
        char probe;
        ssize_t n = pread(fd, &probe, 1, 0);
        return n > 0 ? FC_CHANGED : n < 0 ? errno : 0;
    }
    if (*reflink == 1) {
        if (ioctl(out, FICLONE, fd) == 0)
            return 0;
        int err = errno;
        if (!is_fallback(err))
            return err;
        if (in_set(err, no_reflink_errnos, COUNT(no_reflink_errnos)))
            *reflink = FC_NO_REFLINK;
    }
    long long pos = 0;
    int use_range = *range == 1;
    while (pos < size) {
        ssize_t n;
        if (use_range) {
            loff_t in_off = pos, out_off = pos;
            n = copy_file_range(fd, &in_off, out, &out_off, (size_t)(size - pos), 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (!is_fallback(errno))
                    return errno;
                if (in_set(errno, no_reflink_errnos, COUNT(no_reflink_errnos)))
                    *range = FC_NO_REFLINK;
                use_range = 0;
                continue;
            }
            if (n == 0) {
                use_range = 0; /* short source, or a lazy filesystem: read/write tells */
                continue;
            }
        } else {
            char buf[65536];
            size_t want = (size_t)(size - pos) < sizeof buf ? (size_t)(size - pos) : sizeof buf;
            n = read_full(fd, buf, want, pos);
            if (n < 0)
                return (int)-n;
            if (n == 0)
                return FC_CHANGED;
            ssize_t done = 0;
            while (done < n) {
                ssize_t w = pwrite(out, buf + done, (size_t)(n - done), pos + done);
                if (w < 0) {
                    if (errno == EINTR)
                        continue;
                    return errno;
                }
                done += w;
            }
        }
        pos += n;
    }
    return 0;
}

/* Read `want` bytes at pos (want - 1 expected: the last byte asks for the end of the file),
 * as read_full, but a single pread that stops one byte short is taken as the end (a regular
 * file's read stops short only there), so the usual case costs one system call, not the
 * second pread that would find the end. The count read, or -errno. */
static ssize_t read_to_end(int fd, char *buf, size_t want, long long pos) {
    ssize_t n;
    do
        n = pread(fd, buf, want, pos);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if ((size_t)n + 1 >= want)
        return n;
    ssize_t more = read_full(fd, buf + n, want - (size_t)n, pos + n); /* short: go on */
    return more < 0 ? more : n + more;
}

/* 0 when a (a regular file) and b both hold `size` bytes, the same ones, FV_MISMATCH, or an
 * errno. The size is known (the source's from an fstat of a just before, the copy's what was
 * written into b), so nothing is fstat'ed: each side is read in COMPARE_CHUNK pieces, the
 * last read asking for one byte past `size`, which must find the end of both (a source
 * grown or shrunk since that fstat never passes). buf_a and buf_b hold COMPARE_CHUNK + 1
 * bytes each. */
static int compare_fds(int a, int b, long long size, char *buf_a, char *buf_b) {
    for (long long pos = 0;; pos += COMPARE_CHUNK) {
        long long left = size - pos;
        int last = left <= COMPARE_CHUNK;
        size_t want = last ? (size_t)left + 1 : COMPARE_CHUNK;
        ssize_t na = last ? read_to_end(a, buf_a, want, pos) : read_full(a, buf_a, want, pos);
        if (na < 0)
            return (int)-na;
        ssize_t nb = last ? read_to_end(b, buf_b, want, pos) : read_full(b, buf_b, want, pos);
        if (nb < 0)
            return (int)-nb;
        size_t expect = last ? (size_t)left : want;
        if ((size_t)na != expect || (size_t)nb != expect || memcmp(buf_a, buf_b, expect) != 0)
            return FV_MISMATCH;
        if (last)
            return 0;
    }
}

#define NS_SECONDS_MAX 9223372035LL /* the most seconds whose nanoseconds fit 64 bits */
/* A time as nanoseconds since the epoch into *ns: 1, or 0 when it does not fit 64 bits
 * (past 2262 or before 1677: ext4 keeps times to 2446), which computed it modulo 2^64 (a
 * copy of a file dated 2400 recorded a time its copy never had). */
static int time_ns(struct timespec t, long long *ns) {
    if (t.tv_sec > NS_SECONDS_MAX || t.tv_sec < -NS_SECONDS_MAX)
        return 0;
    *ns = (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
    return 1;
}

/* The source's access ACL onto the temporary, its mode just set (`_metadata.keep_acl`): the
 * ACL is part of the mode, as `cp -p` keeps it, and the mode alone (its group bits the ACL's
 * mask) can give the owning group more than the ACL does. A destination that cannot hold it
 * gets the mode with group bits no wider than group:: & mask (`_metadata.narrowed_mode`).
 * A source without one: ``inherits`` (the destination directory has a default ACL, which
 * the temporary took) removes what it took, as `cp -p` keeps the mode alone (it gave named
 * users access the source did not). 0, or an errno. One fgetxattr per file (ENODATA: no
 * ACL). */
#define ACL_ACCESS "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"
static int acl_quiet(int err) {
    return err == ENODATA || err == ENOTSUP || err == EOPNOTSUPP || err == EPERM || err == EACCES;
}
static int keep_acl(int fd, int out, mode_t mode, int inherits) {
    char small[256];
    char *buf = small;
    ssize_t n = fgetxattr(fd, ACL_ACCESS, small, sizeof small);
    if (n < 0 && errno == ERANGE) {
        ssize_t want = fgetxattr(fd, ACL_ACCESS, NULL, 0);
        if (want < 0)
            return acl_quiet(errno) ? 0 : errno;
        if ((buf = malloc((size_t)want + 1)) == NULL)
            return ENOMEM;
        n = fgetxattr(fd, ACL_ACCESS, buf, (size_t)want + 1);
    }
    int rc = 0;
    if (n < 0) {
        rc = acl_quiet(errno) ? 0 : errno;
        if (rc == 0 && inherits && fremovexattr(out, ACL_ACCESS) != 0 && errno != ENODATA)
            rc = errno;
    } else if (fsetxattr(out, ACL_ACCESS, buf, (size_t)n, 0) != 0) {
        if (errno == ENOTSUP || errno == EOPNOTSUPP || errno == EPERM || errno == EINVAL) {
            unsigned group = 0, mask = 7;
            if (n >= 4 && (n - 4) % 8 == 0)
                for (ssize_t at = 4; at < n; at += 8) {
                    unsigned tag = (unsigned char)buf[at] | (unsigned char)buf[at + 1] << 8;
                    unsigned perm = (unsigned char)buf[at + 2] & 7;
                    if (tag == 0x04) /* ACL_GROUP_OBJ */
                        group = perm;
                    else if (tag == 0x10) /* ACL_MASK */
                        mask = perm;
                }
            if (fchmod(out, (mode & ~(mode_t)070) | (mode_t)((group & mask) << 3)) != 0)
                rc = errno;
        } else
            rc = errno;
    }
    if (buf != small)
        free(buf);
    return rc;
}

/* Write one item into a new temporary (it->tmp, left open as it->out): 0, or an errno or
 * code with nothing left behind. `land` then puts it in place: at once, or, when `batch`
 * (durable, several files), once the whole group is written. */
static int write_one(item_t *it, int flags, int batch, long long max_size,
                     const char *token, int *reflink, int *range, char *bufs,
                     uid_t uid, gid_t gid, int inherits) {
    struct stat st, after;
    it->out = -1;
    if (flags & FC_LSTAT) {
        if (fstatat(it->src_dir_fd, it->src, &st, AT_SYMLINK_NOFOLLOW) != 0)
            return errno;
        if (!S_ISREG(st.st_mode))
            return FC_NOT_REGULAR;
    }
    int fd = openat(it->src_dir_fd, it->src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? FC_NOT_REGULAR : errno;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return err;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return FC_NOT_REGULAR;
    }
    /* times that do not fit 64-bit nanoseconds: the Python path copies and records them */
    long long ns;
    if (!time_ns(st.st_mtim, &ns) || !time_ns(st.st_ctim, &ns)) {
        close(fd);
        return FC_NOT_PLAIN;
    }
    /* Checked on the descriptor the bytes are read from: no window for a swap. A filesystem
       without extended attributes (ENOTSUP) has none to carry. */
    if ((flags & FC_OWNED) && (st.st_uid != uid || st.st_gid != gid)) {
        close(fd);
        return FC_NOT_PLAIN;
    }
    if (flags & FC_NO_XATTRS) {
        ssize_t names = flistxattr(fd, NULL, 0);
        if (names != 0 && !(names < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))) {
            int err = names < 0 ? errno : FC_NOT_PLAIN;
            close(fd);
            return err;
        }
    }
    if ((long long)st.st_size > max_size) { /* grew since the walk */
        close(fd);
        return FC_TOO_BIG;
    }
    if ((long long)st.st_blocks * 512 < (long long)st.st_size) { /* holes: keep them */
        close(fd);
        return FC_SPARSE;
    }
    int len;
    Py_ssize_t tail = 1 + (Py_ssize_t)strlen(token) + 1 + 16 + (Py_ssize_t)strlen(TMP_SUFFIX);
    if (1 + it->name_len + tail <= NAME_MAX_BYTES)
        len = snprintf(it->tmp, sizeof it->tmp, ".%s.%s.%016llx" TMP_SUFFIX, it->name, token,
                       (unsigned long long)next_token());
    else
        len = snprintf(it->tmp, sizeof it->tmp, ".parjobs.%s.%016llx" TMP_SUFFIX, token,
                       (unsigned long long)next_token());
    if (len < 0 || len > NAME_MAX_BYTES) {
        close(fd);
        return ENAMETOOLONG;
    }
    int out = openat(it->dir_fd, it->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     (flags & FC_MODE) ? 0600 : 0666);
    if (out < 0) {
        int err = errno;
        close(fd);
        return err;
    }
    int rc = copy_data(fd, out, (long long)st.st_size, reflink, range);
    if (rc == 0 && fstat(fd, &after) != 0)
        rc = errno;
    if (rc == 0 && (after.st_size != st.st_size || after.st_mtim.tv_sec != st.st_mtim.tv_sec ||
                    after.st_mtim.tv_nsec != st.st_mtim.tv_nsec))
        rc = FC_CHANGED;
    /* saved in place with its mtime put back: the ctime moved (compared while the link
       count is the same, as `_fs.ctime_change`) */
    if (rc == 0 && after.st_nlink == st.st_nlink &&
        (after.st_ctim.tv_sec != st.st_ctim.tv_sec || after.st_ctim.tv_nsec != st.st_ctim.tv_nsec))
        rc = FC_CHANGED;
    /* copy --verify: the temporary must hold the source's bytes before it takes the final
       name, so no unchecked copy is ever there (read back while its pages are hot). */
    if (rc == 0 && (flags & FC_COMPARE))
        rc = compare_fds(fd, out, (long long)st.st_size, bufs, bufs + COMPARE_CHUNK + 1);
    if (rc == 0 && (flags & FC_MODE) && fchmod(out, st.st_mode & 07777) != 0)
        rc = errno;
    if (rc == 0 && (flags & FC_MODE))
        rc = keep_acl(fd, out, st.st_mode & 07777, inherits);
    if (rc == 0 && (flags & FC_TIMES)) {
        struct timespec times[2] = {st.st_atim, st.st_mtim};
        if (futimens(out, times) != 0)
            rc = errno;
    }
    /* Durable, several files: start writing the data back now, so the group's fsyncs (in
       `land`) find it under way and one journal commit tends to cover many files. */
    if (rc == 0 && batch)
        sync_file_range(out, 0, 0, SYNC_FILE_RANGE_WRITE);
    close(fd);
    if (rc != 0) {
        close(out);
        unlinkat(it->dir_fd, it->tmp, 0);
        return rc;
    }
    it->src_size = (long long)st.st_size;
    time_ns(st.st_mtim, &it->src_mtime_ns); /* (both fit: checked above) */
    it->src_dev = (unsigned long long)st.st_dev;
    it->src_ino = (unsigned long long)st.st_ino;
    time_ns(st.st_ctim, &it->src_ctime_ns);
    it->src_nlink = (unsigned long long)st.st_nlink;
    it->out = out;
    return 0;
}

/* Put a written temporary in place: fsync it (FSYNC), read back its identity (the rename
 * keeps inode and mtime: the caller records it without looking the name up again), close,
 * rename with no replace. 0, or an errno with the temporary removed. */
static int land(item_t *it, int flags) {
    struct stat written;
    int rc = 0;
    if ((flags & FC_FSYNC) && fsync(it->out) != 0)
        rc = errno;
    if (rc == 0 && fstat(it->out, &written) != 0)
        rc = errno;
    if (close(it->out) != 0 && rc == 0)
        rc = errno;
    it->out = -1;
    if (rc == 0 &&
        syscall(SYS_renameat2, it->dir_fd, it->tmp, it->dir_fd, it->name, RENAME_NOREPLACE) != 0)
        rc = errno;
    if (rc != 0) {
        unlinkat(it->dir_fd, it->tmp, 0);
        return rc;
    }
    it->size = (long long)written.st_size;
    it->mtime_ns = 0; /* (never left so: the source's time, checked, or now without TIMES) */
    time_ns(written.st_mtim, &it->mtime_ns);
    it->ino = (unsigned long long)written.st_ino;
    return 0;
}

PyDoc_STRVAR(copy_many_doc,
             "copy_many(items, flags, max_size, token)\n"
             "    -> (results, written, reflink_refused, range_refused, sources)\n\n"
             "items: a list of (source path: bytes, destination dir fd: int, name: bytes) or\n"
             "(source dir fd: int, source name: bytes, destination dir fd: int, name: bytes).\n"
             "token: the owner's name token (bytes), carried by every temporary's name.\n"
             "results[i]: 0 when item i is in place, else a positive errno or a negative\n"
             "code (-1 not a regular file, -2 source changed, -3 larger than max_size,\n"
             "-5 sparse, -6 with COPY_COMPARE: the copy's bytes differ from the source's,\n"
             "-8 with OWNED or NO_XATTRS: another owner, or extended attributes; or times that do\n"
             "not fit 64-bit nanoseconds, past 2262);\n"
             "nothing of a failed item is\n"
             "left behind. written[i]: (size, mtime_ns, ino) of the copy in place, read from its\n"
             "descriptor before the rename, or None when item i failed. reflink_refused,\n"
             "range_refused: FICLONE (flag REFLINK), copy_file_range (flag RANGE) was tried\n"
             "and the filesystems refused it for good. sources: with flag SOURCES, sources[i]\n"
             "is (size, mtime_ns, dev, ino, ctime_ns, nlink) of item i's source as it was copied\n"
             "(read from the\n"
             "descriptor its bytes came from; a move unlinks it only while it is still that\n"
             "file), None when item i failed; without it, None. The GIL is released while\n"
             "copying.");

static PyObject *copy_many(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *list;
    int flags;
    long long max_size;
    const char *token_arg;
    Py_ssize_t token_len;
    char token[TOKEN_MAX + 1];
    if (!PyArg_ParseTuple(args, "O!iLy#", &PyList_Type, &list, &flags, &max_size, &token_arg,
                          &token_len))
        return NULL;
    if (token_len == 0 || token_len > TOKEN_MAX || (Py_ssize_t)strlen(token_arg) != token_len ||
        strchr(token_arg, '/') != NULL) {
        PyErr_SetString(PyExc_ValueError, "bad token");
        return NULL;
    }
    memcpy(token, token_arg, (size_t)token_len + 1); /* ours while the GIL is released */
    Py_ssize_t n = PyList_GET_SIZE(list);
    item_t *items = items_array(n, sizeof(item_t));
    if (items == NULL)
        return PyErr_NoMemory();
    /* The list keeps every bytes object alive; hold it while the GIL is released. */
    Py_INCREF(list);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(list, i);
        PyObject *src, *name;
        items[i].src_dir_fd = AT_FDCWD;
        if (PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 4) {
            if (!PyArg_ParseTuple(t, "iSiS", &items[i].src_dir_fd, &src, &items[i].dir_fd, &name))
                goto fail;
        } else if (!PyArg_ParseTuple(t, "SiS", &src, &items[i].dir_fd, &name))
            goto fail;
        items[i].src = PyBytes_AS_STRING(src);
        items[i].name = PyBytes_AS_STRING(name);
        items[i].name_len = PyBytes_GET_SIZE(name);
        if ((items[i].src_dir_fd != AT_FDCWD &&
             (items[i].src_dir_fd < 0 || PyBytes_GET_SIZE(src) == 0 ||
              strchr(items[i].src, '/') != NULL)) ||
            (Py_ssize_t)strlen(items[i].src) != PyBytes_GET_SIZE(src) ||
            (Py_ssize_t)strlen(items[i].name) != items[i].name_len || items[i].name_len == 0 ||
            strchr(items[i].name, '/') != NULL) {
            PyErr_Format(PyExc_ValueError, "item %zd: bad path or name", i);
            goto fail;
        }
    }
    int reflink = (flags & FC_REFLINK) ? 1 : 0, range = (flags & FC_RANGE) ? 1 : 0;
    char *bufs = NULL;
    if ((flags & FC_COMPARE) && (bufs = PyMem_RawMalloc(2 * ((size_t)COMPARE_CHUNK + 1))) == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS;
    /* Item by item; durable, up to FC_OPEN_MAX files are written before the first of them is
       fsynced (see write_one), so the group waits for the disk about once rather than once a
       file, with a bounded number of descriptors open per thread. */
    int batch = (flags & FC_FSYNC) && n > 1;
    /* this process' owner, once per call, for OWNED only (a move's groups): a copy's calls
       make no system call for it */
    uid_t uid = (flags & FC_OWNED) ? geteuid() : 0;
    gid_t gid = (flags & FC_OWNED) ? getegid() : 0;
    Py_ssize_t start = 0; /* the first written item not landed yet */
    /* whether the item's destination directory has a default ACL (`keep_acl`), looked up
       when the directory changes (a group's files come a directory at a time) */
    int acl_dir = -1, inherits = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((flags & FC_MODE) && items[i].dir_fd != acl_dir) {
            acl_dir = items[i].dir_fd;
            inherits = fgetxattr(acl_dir, ACL_DEFAULT, NULL, 0) > 0;
        }
        items[i].result = write_one(&items[i], flags, batch, max_size, token, &reflink, &range,
                                    bufs, uid, gid, inherits);
        if (batch && i + 1 - start < FC_OPEN_MAX && i + 1 < n)
            continue;
        for (Py_ssize_t j = batch ? start : i; j <= i; j++)
            if (items[j].result == 0)
                items[j].result = land(&items[j], flags);
        start = i + 1;
    }
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(bufs);
    PyObject *results = PyList_New(n), *written = PyList_New(n);
    PyObject *sources = (flags & FC_SOURCES) ? PyList_New(n) : Py_NewRef(Py_None);
    if (results == NULL || written == NULL || sources == NULL)
        goto fail_lists;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyLong_FromLong(items[i].result), *w;
        if (items[i].result == 0)
            w = Py_BuildValue("(LLK)", items[i].size, items[i].mtime_ns, items[i].ino);
        else
            w = Py_NewRef(Py_None);
        if (r == NULL || w == NULL) {
            Py_XDECREF(r);
            Py_XDECREF(w);
            goto fail_lists;
        }
        PyList_SET_ITEM(results, i, r);
        PyList_SET_ITEM(written, i, w);
        if (sources != Py_None) {
            PyObject *s;
            if (items[i].result == 0)
                s = Py_BuildValue("(LLKKLK)", items[i].src_size, items[i].src_mtime_ns,
                                  items[i].src_dev, items[i].src_ino, items[i].src_ctime_ns,
                                  items[i].src_nlink);
            else
                s = Py_NewRef(Py_None);
            if (s == NULL)
                goto fail_lists;
            PyList_SET_ITEM(sources, i, s);
        }
    }
    Py_DECREF(list);
    PyMem_Free(items);
    return Py_BuildValue("(NNOON)", results, written, reflink == FC_NO_REFLINK ? Py_True : Py_False,
                         range == FC_NO_REFLINK ? Py_True : Py_False, sources);
fail_lists:
    Py_XDECREF(results);
    Py_XDECREF(written);
    Py_XDECREF(sources);
fail:
    Py_DECREF(list);
    PyMem_Free(items);
    return NULL;
}

/* A list of the n ints found every stride bytes from first (a result field of an array of
 * structs, or an int array), or NULL with the error set. */
static PyObject *int_list(Py_ssize_t n, const int *first, size_t stride) {
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *v = PyLong_FromLong(*(const int *)((const char *)first + (size_t)i * stride));
        if (v == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, v);
    }
    return out;
}

PyDoc_STRVAR(unlink_many_doc,
             "unlink_many(items) -> results\n\n"
             "items: a list of (path: bytes, size: int, mtime_ns: int, dev: int, ino: int,\n"
             "copy's dir fd: int, copy's name: bytes, copy's inode: int[, source's dir fd: int\n"
             "[, ctime_ns: int, nlink: int]]) (exact bytes and ints; with the ninth field, path\n"
             "is the source's name in that directory, AT_FDCWD for a path): a move removes the sources of a group whose copies are verified and on\n"
             "disk. Each copy's name must still hold the copy written (that inode, a regular\n"
             "file, never followed through a symlink): a file renamed over it since is\n"
             "another's, and its source stays. Each path is then unlinked only if it is still\n"
             "the regular file of that device and inode, size and mtime (lstat), so a source\n"
             "replaced since it was copied is kept, even by a file of the same size and mtime\n"
             "renamed over it (rsync -a, cp -p); given its ctime and link count, one whose\n"
             "ctime moved while its link count stayed (saved in place, its mtime put back) is\n"
             "kept too. The GIL is released. results[i]: 0, NOT_OURS\n"
             "(the copy's name holds another file: not unlinked), CHANGED (not unlinked: the\n"
             "source is another file now), or the errno.");

typedef struct {
    int src_dir_fd;   /* the source's directory (AT_FDCWD: path is a path) */
    const char *path; /* its name in src_dir_fd */
    long long size;
    long long mtime_ns;
    unsigned long long dev;
    unsigned long long ino;
    int dir_fd; /* the copy: its directory, name and inode */
    const char *name;
    unsigned long long copy_ino;
    int has_ctime; /* the eleven-field form: ctime_ns and nlink as copied */
    long long ctime_ns;
    unsigned long long nlink;
} source_t;

/* 0 once the source is unlinked, FV_NOT_OURS when the copy's name holds another file,
 * FC_CHANGED when the source is not the file copied, or an errno. */
static int unlink_source(const source_t *s) {
    struct stat st;
    if (fstatat(s->dir_fd, s->name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno;
    if (!S_ISREG(st.st_mode) || (unsigned long long)st.st_ino != s->copy_ino)
        return FV_NOT_OURS;
    if (fstatat(s->src_dir_fd, s->path, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno;
    long long mtime_ns, ctime_ns;
    if (!S_ISREG(st.st_mode) || (unsigned long long)st.st_dev != s->dev ||
        (unsigned long long)st.st_ino != s->ino || (long long)st.st_size != s->size ||
        !time_ns(st.st_mtim, &mtime_ns) || mtime_ns != s->mtime_ns)
        return FC_CHANGED;
    if (s->has_ctime && (unsigned long long)st.st_nlink == s->nlink &&
        (!time_ns(st.st_ctim, &ctime_ns) || ctime_ns != s->ctime_ns))
        return FC_CHANGED; /* saved in place, its mtime put back (as `_fs.ctime_change`) */
    return unlinkat(s->src_dir_fd, s->path, 0) == 0 ? 0 : errno;
}

#define SOURCE_FIELDS 8 /* and a ninth, optional: the source's directory fd; then ctime, nlink */

/* Read item i, a (bytes, int, int, int, int, int, bytes, int) tuple, into *s: 0, or -1
 * with the error set. Exact types only, so no Python code (an __index__, a bytes subclass)
 * runs while earlier items' paths are held as pointers into their bytes objects; the list
 * itself is held. */
static int read_source(PyObject *t, Py_ssize_t i, source_t *s) {
    Py_ssize_t fields = PyTuple_CheckExact(t) ? PyTuple_GET_SIZE(t) : 0;
    if ((fields != SOURCE_FIELDS && fields != SOURCE_FIELDS + 1 && fields != SOURCE_FIELDS + 3) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 0)) || !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 6))) {
        PyErr_Format(PyExc_TypeError,
                     "item %zd: not a (bytes, int, int, int, int, int, bytes, int[, int[, int, "
                     "int]]) tuple",
                     i);
        return -1;
    }
    for (Py_ssize_t k = 1; k < fields; k++)
        if (k != 6 && !PyLong_CheckExact(PyTuple_GET_ITEM(t, k))) {
            PyErr_Format(PyExc_TypeError, "item %zd: field %zd is not an int", i, k);
            return -1;
        }
    PyObject *path = PyTuple_GET_ITEM(t, 0), *name = PyTuple_GET_ITEM(t, 6);
    s->size = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 1));
    s->mtime_ns = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 2));
    s->dev = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 3));
    s->ino = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 4));
    long dir_fd = PyLong_AsLong(PyTuple_GET_ITEM(t, 5));
    s->copy_ino = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 7));
    long src_dir_fd = fields > SOURCE_FIELDS ? PyLong_AsLong(PyTuple_GET_ITEM(t, 8)) : AT_FDCWD;
    s->has_ctime = fields > SOURCE_FIELDS + 1;
    s->ctime_ns = s->has_ctime ? PyLong_AsLongLong(PyTuple_GET_ITEM(t, 9)) : 0;
    s->nlink = s->has_ctime ? PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, 10)) : 0;
    if (PyErr_Occurred()) /* out of range (each conversion returns -1 and sets it) */
        return -1;
    if (dir_fd < 0 || dir_fd > INT_MAX) { /* a descriptor, never AT_FDCWD */
        PyErr_Format(PyExc_ValueError, "item %zd: bad directory fd", i);
        return -1;
    }
    s->dir_fd = (int)dir_fd;
    if (src_dir_fd != AT_FDCWD &&
        (src_dir_fd < 0 || src_dir_fd > INT_MAX || PyBytes_GET_SIZE(path) == 0 ||
         strchr(PyBytes_AS_STRING(path), '/') != NULL)) {
        PyErr_Format(PyExc_ValueError, "item %zd: bad source directory fd or name", i);
        return -1;
    }
    s->src_dir_fd = (int)src_dir_fd;
    if ((Py_ssize_t)strlen(PyBytes_AS_STRING(path)) != PyBytes_GET_SIZE(path) ||
        (Py_ssize_t)strlen(PyBytes_AS_STRING(name)) != PyBytes_GET_SIZE(name) ||
        PyBytes_GET_SIZE(name) == 0 || strchr(PyBytes_AS_STRING(name), '/') != NULL) {
        PyErr_Format(PyExc_ValueError, "item %zd: bad path or name", i);
        return -1;
    }
    s->path = PyBytes_AS_STRING(path);
    s->name = PyBytes_AS_STRING(name);
    return 0;
}

static PyObject *unlink_many(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    source_t *sources = items_array(n, sizeof(source_t));
    int *errs = items_array(n, sizeof(int));
    PyObject *results = NULL;
    if (sources == NULL || errs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_INCREF(list); /* keeps every bytes object alive while the GIL is released */
    for (Py_ssize_t i = 0; i < n; i++)
        if (read_source(PyList_GET_ITEM(list, i), i, &sources[i]) != 0) {
            Py_DECREF(list);
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++)
        errs[i] = unlink_source(&sources[i]);
    Py_END_ALLOW_THREADS;
    Py_DECREF(list);
    results = int_list(n, errs, sizeof(int));
done:
    PyMem_Free(sources);
    PyMem_Free(errs);
    return results;
}

static PyMethodDef methods[] = {
    {"copy_many", copy_many, METH_VARARGS, copy_many_doc},
    {"unlink_many", unlink_many, METH_VARARGS, unlink_many_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcopy", "Copy, verify and move many small files in one call, without the GIL.",
    -1, methods,
};

static PyObject *errno_tuple(const int *set, size_t n) {
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(set[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, v);
    }
    return t;
}

static int add_tuple(PyObject *m, const char *name, PyObject *value) {
    if (value == NULL)
        return -1;
    if (PyModule_AddObject(m, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}

static const int_constant_t constants[] = {
    {"API", FC_API},
    {"MODE", FC_MODE},
    {"TIMES", FC_TIMES},
    {"REFLINK", FC_REFLINK},
    {"RANGE", FC_RANGE},
    {"LSTAT", FC_LSTAT},
    {"FSYNC", FC_FSYNC},
    {"COPY_COMPARE", FC_COMPARE},
    {"NOT_REGULAR", FC_NOT_REGULAR},
    {"CHANGED", FC_CHANGED},
    {"TOO_BIG", FC_TOO_BIG},
    {"SPARSE", FC_SPARSE},
    {"OWNED", FC_OWNED},
    {"NO_XATTRS", FC_NO_XATTRS},
    {"SOURCES", FC_SOURCES},
    {"NOT_PLAIN", FC_NOT_PLAIN},
    {"NAME_MAX", NAME_MAX_BYTES},
    {"MISMATCH", FV_MISMATCH},
    {"NOT_OURS", FV_NOT_OURS},
    {"COMPARE_CHUNK", COMPARE_CHUNK},
    {"RENAME_NOREPLACE", RENAME_NOREPLACE},
};

PyMODINIT_FUNC PyInit__fastcopy(void) {
    PyObject *m = create_module(&module, constants, COUNT(constants));
    if (m == NULL)
        return NULL;
    if (add_tuple(m, "FALLBACK_ERRNOS", errno_tuple(fallback_errnos, COUNT(fallback_errnos))) < 0 ||
        add_tuple(m, "NO_REFLINK_ERRNOS",
                  errno_tuple(no_reflink_errnos, COUNT(no_reflink_errnos))) < 0 ||
        add_tuple(m, "TMP_SUFFIX", PyBytes_FromString(TMP_SUFFIX)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
