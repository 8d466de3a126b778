/*
 * parjobs.ops._fastscan: list directories and compute content ids in C, without the GIL.
 *
 * scan_dir lists one directory as the walk's `_scan` in _walk.py does: every name but "." and
 * "..", sorted by its bytes, each with an lstat (a stat when following symlinks, the lstat
 * of a broken link) taken through the directory's descriptor, or the error that stat met.
 * One call per directory makes no os.DirEntry and no os.stat_result (a 19-field structure
 * with float times) per entry: only the fields the walk keeps.
 *
 * content_ids computes `content_id` (_hashing.py, layout version 1: the size as 8 bytes
 * little-endian, then the whole file up to CONTENT_ID_SMALL_LIMIT, else a header, four
 * samples and a footer of CONTENT_ID_BLOCK bytes) for a list of files, each opened as
 * `open_regular` opens it (O_NOFOLLOW|O_NONBLOCK, regular files only) and checked unchanged
 * (the listed size, and size and mtime equal before and after the reads). A file that fails
 * is answered with a code, never an exception: the caller runs it again in Python, which
 * reports it with its reason. XXH3-128 comes from vendor/xxhash.h (xxHash 0.8.1, BSD-2-Clause,
 * its licence at its top), vendored so that a plain `pip install` builds it without a system
 * package; python-xxhash gives the same digests.
 *
 * full_hashes computes `hash_file`'s digest (XXH3-128 of the whole file) for a list of files,
 * each opened and checked as content_ids does, read in chunks of FULL_HASH_CHUNK (the
 * duplicates job's hash runs: one call, one release of the GIL, for files a hash_file in
 * Python would release and take it again for at every syscall and chunk).
 *
 * walk_dir lists one directory of a walk's first run as scan_dir does and, with the GIL back,
 * builds its entries (the walk's Entry objects, their slots filled directly) and formats their
 * manifest rows as json.dumps writes them: the walk's Python per entry (3.4 us an entry,
 * holding the GIL the first copies wait for) becomes ~0.3 us of C.
 *
 * scan_tree does the duplicates job's whole scan (`_scan_tree` in _duplicates.py, whose Python
 * fallback is _walk.list_files then _candidates): it walks as list_files does (the same
 * order, errors and loop check, symlinks never followed), keeps one name per inode (the
 * first) of at least min_size bytes, and answers the files sharing their size with another,
 * numbered in walk order; no Python object is made for a file that is not one of them.
 *
 * Why C: per file a Python loop spends as long building objects and calling xxhash as the
 * kernel spends in open/pread/fstat/close, all of it holding the GIL the job's bookkeeping
 * needs; here one call releases the GIL for a whole run of files or a whole directory.
 *
 * Optional, like _fastcopy: without a C compiler the package installs without it and the
 * same work is done in Python (_walk.py, _hashing.py), with the same results.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <structmember.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "_pyc_common.h"

/*
 * XXH3 at the CPU's width. On x86 with GCC or Clang the vendored vendor/xxh_x86dispatch.c
 * (xxHash 0.8.1's own dispatcher, BSD-2-Clause, unmodified) is compiled into this file: it
 * builds the long-input kernels (over 240 bytes) for scalar, SSE2, AVX2 and AVX-512 with
 * __attribute__((target)) and picks the widest the CPU and OS support (CPUID, XGETBV) at
 * module init, so the extension built with the baseline flags runs on any x86-64 yet hashes
 * at AVX2 width where there is AVX2 (about half the instructions of SSE2). Elsewhere (another
 * architecture, another compiler, or built with -mavx, which the dispatcher refuses) the
 * header alone is used, with the vector width the compiler targets.
 */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__AVX__)
#define FS_DISPATCH 1
#define XXH_DISPATCH_SCALAR 1 /* also build the scalar kernels, so the tests can force them */
#pragma GCC visibility push(hidden) /* its functions are not static: keep them in this module */
#include "vendor/xxh_x86dispatch.c"
#pragma GCC visibility pop
#define fs_xxh3_128 XXH3_128bits_dispatch
#define fs_xxh3_128_update XXH3_128bits_update_dispatch
#else
#define FS_DISPATCH 0
#define XXH_INLINE_ALL
#include "vendor/xxhash.h"
#define fs_xxh3_128 XXH3_128bits
#define fs_xxh3_128_update XXH3_128bits_update
#endif

/* The calling convention, checked by _hashing.py and _walk.py: a build that differs is ignored
 * (3: XXH3 dispatched to the CPU's width, xxh3_vector; 4: scan_tree's stopped may be a bytearray
 * flag; 5: report_groups, group_lines, content_ids' stop; 6: scan_dir's expect, and scan_tree
 * lists a directory only while it is the one its parent's listing saw; 7: UNSTABLE_INODES
 * exported, checked against _kernel's; 8: walk_dir and entry_class; 9: mtimes past 2262
 * exact, not modulo 2^64; an older build is refused, not measured; full_hashes came within 5
 * and is looked up by name). */
#define FS_API 9

/* The content id layout (exported: _hashing.py refuses a build whose layout differs). */
#define CONTENT_ID_SMALL_LIMIT (100 * 1024)
#define CONTENT_ID_BLOCK (8 * 1024)
#define CONTENT_ID_SAMPLES 4
#define CONTENT_ID_ALIGN (4 * 1024)

/* content_ids' codes besides a positive errno (exported). */
#define FS_NOT_REGULAR (-1) /* not a regular file */
#define FS_CHANGED (-2)     /* not the listed size, or changed while read */
#define FS_STOPPED (-3)     /* not read: the call was stopped before it (content_ids' stop) */

#define SIZE_PREFIX 8
/* The most content_id hashes: the size, then the whole of a small file. */
#define ID_BUFFER (SIZE_PREFIX + CONTENT_ID_SMALL_LIMIT)

/* st's mtime in nanoseconds since 1970 into *ns: 1, or 0 where that does not fit 64 bits
 * (past 2262 or before 1677; ext4 keeps times to 2446), *ns then meaningless. */
static int mtime_ns_fits(const struct stat *st, long long *ns) {
    long long scaled;
    return !__builtin_mul_overflow((long long)st->st_mtim.tv_sec, 1000000000LL, &scaled) &&
           !__builtin_add_overflow(scaled, (long long)st->st_mtim.tv_nsec, ns);
}

/* st's mtime in nanoseconds, exact as os.stat's st_mtime_ns (an int past 64 bits where it
 * does not fit: never modulo 2^64); NULL on error. */
static PyObject *mtime_ns_object(const struct stat *st) {
    long long ns;
    if (mtime_ns_fits(st, &ns))
        return PyLong_FromLongLong(ns);
    PyObject *sec = PyLong_FromLongLong((long long)st->st_mtim.tv_sec);
    PyObject *billion = PyLong_FromLong(1000000000L);
    PyObject *nsec = PyLong_FromLong(st->st_mtim.tv_nsec);
    PyObject *scaled = sec && billion ? PyNumber_Multiply(sec, billion) : NULL;
    PyObject *exact = scaled && nsec ? PyNumber_Add(scaled, nsec) : NULL;
    Py_XDECREF(sec);
    Py_XDECREF(billion);
    Py_XDECREF(nsec);
    Py_XDECREF(scaled);
    return exact;
}

/* Read exactly len bytes at offset (short reads are legal; EOF is a change). */
static int read_exactly(int fd, unsigned char *buf, size_t len, off_t offset) {
    ssize_t got = read_full(fd, buf, len, (long long)offset);
    if (got < 0)
        return (int)-got;
    return (size_t)got < len ? FS_CHANGED : 0;
}

/* Open path as `open_regular` does (O_NOFOLLOW|O_NONBLOCK, a regular file only) and check it
 * has the listed size: its descriptor, before filled, or -1 with *err the errno or code. */
static int open_listed(const char *path, long long size, struct stat *before, int *err) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (fstat(fd, before) < 0)
        *err = errno;
    else if (!S_ISREG(before->st_mode))
        *err = FS_NOT_REGULAR;
    else if ((long long)before->st_size != size)
        *err = FS_CHANGED;
    else
        return fd;
    close(fd);
    return -1;
}

/* 0 if fd has the size, mtime and ctime it had before the reads, else an errno or CHANGED.
 * (A file saved in place with its mtime put back keeps size and mtime, not its ctime; a
 * ctime is compared only while the link count is the same, as `_fs.ctime_change`.) */
static int unchanged(int fd, const struct stat *before) {
    struct stat after;
    if (fstat(fd, &after) < 0)
        return errno;
    if (after.st_size != before->st_size || after.st_mtim.tv_sec != before->st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != before->st_mtim.tv_nsec)
        return FS_CHANGED;
    if (after.st_nlink == before->st_nlink && (after.st_ctim.tv_sec != before->st_ctim.tv_sec ||
                                               after.st_ctim.tv_nsec != before->st_ctim.tv_nsec))
        return FS_CHANGED;
    return 0;
}

/* The content id of one file into digest; 0 or a code. buf holds ID_BUFFER bytes. (flag:
 * content_ids reads it between files only: an id reads at most ID_BUFFER bytes.) */
static int content_id_of(const char *path, long long size, unsigned char *buf,
                         volatile const char *flag, XXH128_canonical_t *digest) {
    (void)flag;
    struct stat before;
    int err = 0;
    int fd = open_listed(path, size, &before, &err);
    if (fd < 0)
        return err;
    for (int k = 0; k < SIZE_PREFIX; k++)
        buf[k] = (unsigned char)((unsigned long long)size >> (8 * k));
    size_t len = SIZE_PREFIX;
    if (size <= CONTENT_ID_SMALL_LIMIT) {
        if (size > 0 && (err = read_exactly(fd, buf + len, (size_t)size, 0)) != 0)
            goto out;
        len += (size_t)size;
    } else {
        long long offsets[CONTENT_ID_SAMPLES + 2];
        offsets[0] = 0;
        for (int k = 1; k <= CONTENT_ID_SAMPLES; k++)
            offsets[k] = size * k / (CONTENT_ID_SAMPLES + 1) / CONTENT_ID_ALIGN * CONTENT_ID_ALIGN;
        offsets[CONTENT_ID_SAMPLES + 1] = size - CONTENT_ID_BLOCK;
        for (int k = 0; k < CONTENT_ID_SAMPLES + 2; k++) {
            if ((err = read_exactly(fd, buf + len, CONTENT_ID_BLOCK, (off_t)offsets[k])) != 0)
                goto out;
            len += CONTENT_ID_BLOCK;
        }
    }
    if ((err = unchanged(fd, &before)) == 0)
        XXH128_canonicalFromHash(digest, fs_xxh3_128(buf, len));
out:
    close(fd);
    return err;
}

/* The chunk full_hashes reads at a time: with a worker thread per core or more (the job's
 * pool has 8 on 2 cores), one buffer a thread stays in the core's cache between the read's
 * copy and the hash (1 MiB measured the same: the benchmark's 508 files on 8 threads, 36-37
 * against 37-40 ms of CPU). */
#define FULL_HASH_CHUNK (256 * 1024)

/* The whole file's XXH3-128 (as `hash_file`'s, of the listed size) into digest; 0 or a code
 * (STOPPED: the flag was set, read before each chunk). buf holds FULL_HASH_CHUNK bytes. */
static int full_hash_of(const char *path, long long size, unsigned char *buf,
                        volatile const char *flag, XXH128_canonical_t *digest) {
    struct stat before;
    int err = 0;
    int fd = open_listed(path, size, &before, &err);
    if (fd < 0)
        return err;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* (advice: its failure is no error) */
    XXH3_state_t state; /* (aligned as its type asks, on the stack) */
    XXH3_128bits_reset(&state);
    for (long long at = 0; at < size;) {
        if (flag != NULL && *flag != 0) {
            err = FS_STOPPED;
            goto out;
        }
        size_t want = size - at < FULL_HASH_CHUNK ? (size_t)(size - at) : FULL_HASH_CHUNK;
        if ((err = read_exactly(fd, buf, want, (off_t)at)) != 0)
            goto out;
        fs_xxh3_128_update(&state, buf, want);
        at += (long long)want;
    }
    if ((err = unchanged(fd, &before)) == 0)
        XXH128_canonicalFromHash(digest, XXH3_128bits_digest(&state));
out:
    close(fd);
    return err;
}

typedef struct {
    const char *path;
    long long size;
    int result;
    XXH128_canonical_t digest;
} id_item_t;

PyDoc_STRVAR(content_ids_doc,
"content_ids(items, stop=None, /) -> list\n\n"
"The content id of each (path, size) in items: its lowercase hex string, or an int code\n"
"(a positive errno, NOT_REGULAR, or CHANGED: not that size, or changed while read). stop,\n"
"a bytearray: once its first byte is not 0 (read before each file, without the GIL) the\n"
"files not yet read are answered STOPPED.");

PyDoc_STRVAR(full_hashes_doc,
"full_hashes(items, stop=None, /) -> list\n\n"
"The XXH3-128 digest of each (path, size) in items, whole, as hash_file's: its lowercase hex\n"
"string, or an int code as content_ids answers (stop read before each chunk read too).");

/* A file's answer into digest: content_id_of or full_hash_of. */
typedef int (*per_file_t)(const char *path, long long size, unsigned char *buf,
                          volatile const char *flag, XXH128_canonical_t *digest);

/* content_ids and full_hashes: each file's answer (fn, a buffer of buf_len bytes) without the
 * GIL, then the list of answers. */
static PyObject *per_file(PyObject *args, per_file_t fn, size_t buf_len) {
    PyObject *list, *stop = Py_None;
    if (!PyArg_ParseTuple(args, "O!|O", &PyList_Type, &list, &stop))
        return NULL;
    if (stop != Py_None && !PyByteArray_Check(stop)) {
        PyErr_SetString(PyExc_TypeError, "stop must be a bytearray or None");
        return NULL;
    }
    /* Its first byte, read without the GIL: the bytearray is held and its buffer exported
     * for the call, so that another thread cannot resize (move or free) it meanwhile (a
     * resize raises BufferError until the call returns). */
    Py_buffer view = {0};
    if (stop != Py_None && PyObject_GetBuffer(stop, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    volatile const char *flag = view.obj != NULL && view.len ? (const char *)view.buf : NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    id_item_t *items = items_array(n, sizeof(id_item_t));
    unsigned char *buf = PyMem_Malloc(buf_len);
    char *names = NULL; /* every path, NUL-terminated: the list is not touched without the GIL */
    PyObject *results = NULL;
    if (items == NULL || buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i), *path;
        /* (An exact int: "L" would call another's __index__, which could change the list.) */
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            PyErr_Format(PyExc_TypeError, "item %zd: not a (path, size) tuple", i);
            goto done;
        }
        if (!PyArg_ParseTuple(item, "SL", &path, &items[i].size))
            goto done;
        total += (size_t)PyBytes_GET_SIZE(path) + 1;
    }
    if ((names = PyMem_Malloc(total ? total : 1)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    char *at = names;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *path = PyTuple_GET_ITEM(PyList_GET_ITEM(list, i), 0);
        size_t len = (size_t)PyBytes_GET_SIZE(path);
        if (memchr(PyBytes_AS_STRING(path), 0, len) != NULL) {
            PyErr_Format(PyExc_ValueError, "item %zd: a path with a NUL byte", i);
            goto done;
        }
        memcpy(at, PyBytes_AS_STRING(path), len + 1);
        items[i].path = at;
        at += len + 1;
    }
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++)
        items[i].result = flag != NULL && *flag != 0
                              ? FS_STOPPED
                              : fn(items[i].path, items[i].size, buf, flag, &items[i].digest);
    Py_END_ALLOW_THREADS;
    results = PyList_New(n);
    if (results == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value;
        if (items[i].result != 0) {
            value = PyLong_FromLong(items[i].result);
        } else {
            static const char hex[] = "0123456789abcdef";
            char text[2 * sizeof items[i].digest.digest];
            for (size_t k = 0; k < sizeof items[i].digest.digest; k++) {
                text[2 * k] = hex[items[i].digest.digest[k] >> 4];
                text[2 * k + 1] = hex[items[i].digest.digest[k] & 15];
            }
            value = PyUnicode_FromStringAndSize(text, sizeof text);
        }
        if (value == NULL) {
            Py_CLEAR(results);
            goto done;
        }
        PyList_SET_ITEM(results, i, value);
    }
done:
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    PyMem_Free(items);
    PyMem_Free(buf);
    PyMem_Free(names);
    return results;
}

static PyObject *content_ids(PyObject *self, PyObject *args) {
    (void)self;
    return per_file(args, content_id_of, ID_BUFFER);
}

static PyObject *full_hashes(PyObject *self, PyObject *args) {
    (void)self;
    return per_file(args, full_hash_of, FULL_HASH_CHUNK);
}

typedef struct {
    char *name;
    size_t len;
    int err; /* 0, or the errno its stat met */
    struct stat st;
} dir_entry_t;

static int by_name(const void *a, const void *b) {
    const dir_entry_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* list_dir's answer for a directory that is no longer the one its parent's listing saw. */
#define REPLACED (-2)
#define REPLACED_TEXT "replaced since it was listed; not walked"

/* statfs f_type of the filesystems whose directory inode numbers may change while the
 * directory stays (overlayfs on layers of different filesystems without xino; FUSE without
 * use_ino, e.g. sshfs; procfs, /proc/sys; FAT and exFAT; CIFS/SMB with noserverino): a new
 * number once the inode left the cache. Exported as UNSTABLE_INODES, which Python
 * (_kernel.UNSTABLE_INODES) is tested to hold the same. */
static const unsigned long unstable_types[] = {
    0x794c7630, /* overlayfs */
    0x65735546, /* FUSE */
    0x9fa0,     /* procfs */
    0x4d44,     /* MSDOS (FAT) */
    0x2011bab0, /* exFAT */
    0xff534d42, /* CIFS */
    0xfe534d42, /* SMB2 */
};

static int unstable_inodes(unsigned long type) {
    for (size_t i = 0; i < COUNT(unstable_types); i++)
        if (type == unstable_types[i])
            return 1;
    return 0;
}

/* Whether the directory open at dfd, of device and inode st, is the one expected: the same
 * (dev, ino), or, where inode numbers are not stable, the same device (a symlink swapped in
 * was refused by O_NOFOLLOW already; a directory renamed into its place there is not seen). */
static int is_expected(int dfd, const struct stat *st, const unsigned long long *expect) {
    if ((unsigned long long)st->st_dev != expect[0])
        return 0;
    if ((unsigned long long)st->st_ino == expect[1])
        return 1;
    struct statfs sf;
    return fstatfs(dfd, &sf) == 0 && unstable_inodes((unsigned long)sf.f_type);
}

/* List the directory at path into *out (names and stats, sorted by name); 0, an errno, or
 * REPLACED. expect, when not NULL, is the (dev, ino) the directory had in its parent's
 * listing: another directory there now (is_expected), or none (a symlink swapped in for it,
 * without follow: never followed), is REPLACED, not listed, so nothing below it is walked as
 * if it were in the tree (a delete would remove it, a copy read it). */
static int list_dir(const char *path, int follow, const unsigned long long *expect,
                    dir_entry_t **out, size_t *count) {
    int dfd = open(path, O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (dfd < 0)
        return expect != NULL && (errno == ENOTDIR || (errno == ELOOP && !follow)) ? REPLACED : errno;
    if (expect != NULL) {
        struct stat st;
        if (fstat(dfd, &st) < 0) {
            int err = errno;
            close(dfd);
            return err;
        }
        if (!is_expected(dfd, &st, expect)) {
            close(dfd);
            return REPLACED;
        }
    }
    DIR *dir = fdopendir(dfd);
    if (dir == NULL) {
        int err = errno;
        close(dfd);
        return err;
    }
    dir_entry_t *entries = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (de == NULL) {
            err = errno;
            break;
        }
        const char *nm = de->d_name;
        if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0)))
            continue;
        if (n == cap) {
            size_t grown = cap ? 2 * cap : 64;
            dir_entry_t *more = realloc(entries, grown * sizeof *entries);
            if (more == NULL) {
                err = ENOMEM;
                break;
            }
            entries = more, cap = grown;
        }
        dir_entry_t *e = &entries[n];
        e->len = strlen(nm);
        e->name = malloc(e->len + 1);
        if (e->name == NULL) {
            err = ENOMEM;
            break;
        }
        memcpy(e->name, nm, e->len + 1);
        n++;
        e->err = 0;
        if (fstatat(dfd, nm, &e->st, follow ? 0 : AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        e->err = errno;
        if (follow && fstatat(dfd, nm, &e->st, AT_SYMLINK_NOFOLLOW) == 0)
            e->err = 0; /* a broken symlink when following: the link itself */
        else if (follow)
            e->err = errno;
    }
    closedir(dir);
    if (err) {
        for (size_t i = 0; i < n; i++)
            free(entries[i].name);
        free(entries);
        return err;
    }
    if (n > 1) /* (entries is NULL for an empty directory: no qsort of NULL) */
        qsort(entries, n, sizeof *entries, by_name);
    *out = entries;
    *count = n;
    return 0;
}

/* Raise what list_dir answered for path (an errno, or REPLACED). */
static void raise_listing(int err, PyObject *path) {
    if (err == REPLACED) {
        PyObject *exc_args = Py_BuildValue("(isO)", ESTALE, REPLACED_TEXT, path);
        if (exc_args != NULL) {
            PyErr_SetObject(PyExc_OSError, exc_args);
            Py_DECREF(exc_args);
        }
        return;
    }
    errno = err;
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
}

PyDoc_STRVAR(scan_dir_doc,
"scan_dir(path, follow, expect=None, /) -> list\n\n"
"The entries of the directory at path (bytes), sorted by name: (name, (mode, size, mtime_ns,\n"
"dev, ino, nlink), '') each, or (name, None, strerror) where its stat failed. lstat unless\n"
"follow (then stat, and the lstat of a broken link). OSError if the directory cannot be read,\n"
"or (ESTALE, '" REPLACED_TEXT "') if expect, a (dev, ino), is not the directory\n"
"at path (without follow, path is not followed if a symlink now).");

static PyObject *stat_tuple(const struct stat *st) {
    return Py_BuildValue("(kLNKKK)", (unsigned long)st->st_mode, (long long)st->st_size,
                         mtime_ns_object(st), (unsigned long long)st->st_dev,
                         (unsigned long long)st->st_ino, (unsigned long long)st->st_nlink);
}

static PyObject *scan_dir(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *path, *expect_obj = Py_None;
    int follow;
    unsigned long long expect[2];
    if (!PyArg_ParseTuple(args, "O&p|O", PyUnicode_FSConverter, &path, &follow, &expect_obj))
        return NULL;
    if (expect_obj != Py_None && !PyArg_ParseTuple(expect_obj, "KK", &expect[0], &expect[1])) {
        Py_DECREF(path);
        return NULL;
    }
    dir_entry_t *entries = NULL;
    size_t n = 0;
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = list_dir(PyBytes_AS_STRING(path), follow, expect_obj != Py_None ? expect : NULL, &entries, &n);
    Py_END_ALLOW_THREADS;
    PyObject *results = NULL;
    if (err) {
        raise_listing(err, path);
        goto done;
    }
    results = PyList_New((Py_ssize_t)n);
    if (results == NULL)
        goto done;
    for (size_t i = 0; i < n; i++) {
        dir_entry_t *e = &entries[i];
        PyObject *item;
        if (e->err)
            item = Py_BuildValue("(y#Os)", e->name, (Py_ssize_t)e->len, Py_None, strerror(e->err));
        else
            item = Py_BuildValue("(y#Ns)", e->name, (Py_ssize_t)e->len, stat_tuple(&e->st), "");
        if (item == NULL) {
            Py_CLEAR(results);
            goto done;
        }
        PyList_SET_ITEM(results, (Py_ssize_t)i, item);
    }
done:
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
    Py_DECREF(path);
    return results;
}

/* ---- walk_dir: one directory of a first walk, its entries and manifest rows, in C ---- */

/* The walk's Entry class (_walk.py, a slots dataclass) and the offsets of its fields in an
 * instance, in this order, set once by entry_class(): walk_dir fills them as Entry() would,
 * without its Python __init__ (about half of the walk's Python per entry). */
enum { F_INDEX, F_KIND, F_ROOT, F_REL, F_PATH, F_SIZE, F_MTIME, F_MODE, F_DEV, F_INO, F_ERROR, F_NLINK,
       N_FIELDS };
static PyTypeObject *entry_cls;
static Py_ssize_t entry_offsets[N_FIELDS];
/* The kinds, "", and the loop's reason (interned once, by entry_class). */
static PyObject *kind_file, *kind_dir, *kind_symlink, *kind_special, *kind_error, *empty_text, *loop_text;

PyDoc_STRVAR(entry_class_doc,
"entry_class(cls, fields, /) -> None\n\n"
"Make walk_dir build instances of cls, whose fields, named in fields, are the walk's Entry's:\n"
"index, kind, root, rel, path, size, mtime_ns, mode, dev, ino, error, nlink, in that order.\n"
"cls must hold each as a writable slot of its own (a slots dataclass) and no __dict__;\n"
"TypeError otherwise.");

static PyObject *entry_class(PyObject *self, PyObject *args) {
    (void)self;
    PyTypeObject *cls;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names))
        return NULL;
    if (PyTuple_GET_SIZE(names) != N_FIELDS || cls->tp_dictoffset != 0 || cls->tp_itemsize != 0 ||
        cls->tp_alloc == NULL) {
        PyErr_SetString(PyExc_TypeError, "entry_class: not a class of the walk's entry fields in slots");
        return NULL;
    }
    Py_ssize_t offsets[N_FIELDS];
    for (Py_ssize_t i = 0; i < N_FIELDS; i++) {
        PyObject *descr = PyDict_GetItemWithError(cls->tp_dict, PyTuple_GET_ITEM(names, i));
        if (descr == NULL && PyErr_Occurred())
            return NULL;
        PyMemberDef *member = descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)
                                  ? ((PyMemberDescrObject *)descr)->d_member
                                  : NULL;
        if (member == NULL || member->type != T_OBJECT_EX || (member->flags & READONLY) ||
            member->offset < (Py_ssize_t)sizeof(PyObject) ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "entry_class: %R is not a slot of %R", PyTuple_GET_ITEM(names, i),
                         (PyObject *)cls);
            return NULL;
        }
        offsets[i] = member->offset;
    }
    if (kind_file == NULL) {
        const char *texts[] = {"file", "dir", "symlink", "special", "error", "", "symlink loop"};
        PyObject **slots[] = {&kind_file, &kind_dir, &kind_symlink, &kind_special, &kind_error, &empty_text, &loop_text};
        for (size_t i = 0; i < COUNT(texts); i++)
            if ((*slots[i] = PyUnicode_InternFromString(texts[i])) == NULL)
                return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(entry_cls, cls);
    memcpy(entry_offsets, offsets, sizeof offsets);
    Py_RETURN_NONE;
}

/* A growable byte buffer (the manifest rows). */
typedef struct {
    char *data;
    size_t len, cap;
} out_t;

static int out_room(out_t *o, size_t more) {
    if (o->len + more <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + more)
        cap *= 2;
    char *grown = PyMem_Realloc(o->data, cap);
    if (grown == NULL)
        return -1;
    o->data = grown, o->cap = cap;
    return 0;
}

static int out_put(out_t *o, const char *text, size_t n) {
    if (out_room(o, n) < 0)
        return -1;
    memcpy(o->data + o->len, text, n);
    o->len += n;
    return 0;
}

/* ",%llu" of v (the comma first: each number follows a field), negative when minus. */
static int out_digits(out_t *o, unsigned long long v, int minus) {
    char text[24];
    char *end = text + sizeof text, *at = end;
    do
        *--at = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    if (minus)
        *--at = '-';
    *--at = ',';
    return out_put(o, at, (size_t)(end - at));
}

static int out_num(out_t *o, long long v) {
    return v < 0 ? out_digits(o, 0ULL - (unsigned long long)v, 1) : out_digits(o, (unsigned long long)v, 0);
}

static int out_unum(out_t *o, unsigned long long v) {
    return out_digits(o, v, 0);
}

static int out_u(out_t *o, unsigned cp) {
    static const char hex[] = "0123456789abcdef";
    char text[6] = {'\\', 'u', hex[(cp >> 12) & 15], hex[(cp >> 8) & 15], hex[(cp >> 4) & 15], hex[cp & 15]};
    return out_put(o, text, 6);
}

/* The length of the valid UTF-8 sequence at s (n bytes left; s[0] >= 0x80) and its code point,
 * or 0 where Python's UTF-8 decoder finds none (then surrogateescape takes the byte alone:
 * an invalid sequence's bytes are each escaped, whatever its length). */
static size_t utf8_at(const unsigned char *s, size_t n, unsigned *cp) {
    unsigned c = s[0];
    size_t k;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (c >= 0xC2 && c <= 0xDF)
        k = 2, *cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3, *cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4, *cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if (i > 1 && (s[i] < 0x80 || s[i] > 0xBF))
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3F);
    }
    return k;
}

/* text as json.dumps writes the str that os.fsdecode makes of it (ensure_ascii: controls,
 * quote, backslash and DEL escaped, the rest of ASCII as is, other characters as \uXXXX, those
 * past U+FFFF as a surrogate pair, a byte UTF-8 cannot decode as U+DC00 plus it): 0; 1 where
 * text is not ASCII and utf8 is 0 (the filesystem encoding is not UTF-8 with surrogateescape:
 * Python formats the row); -1 out of memory. */
static int out_text(out_t *o, const unsigned char *s, size_t n, int utf8) {
    if (out_put(o, "\"", 1) < 0)
        return -1;
    size_t i = 0;
    while (i < n) {
        size_t plain = i;
        while (plain < n && s[plain] >= 0x20 && s[plain] < 0x7F && s[plain] != '"' && s[plain] != '\\')
            plain++;
        if (out_put(o, (const char *)s + i, plain - i) < 0)
            return -1;
        if ((i = plain) == n)
            break;
        unsigned c = s[i], cp;
        const char *short_escape = c == '"'    ? "\\\""
                                   : c == '\\' ? "\\\\"
                                   : c == '\n' ? "\\n"
                                   : c == '\r' ? "\\r"
                                   : c == '\t' ? "\\t"
                                   : c == '\b' ? "\\b"
                                   : c == '\f' ? "\\f"
                                               : NULL;
        int failed;
        if (short_escape != NULL)
            failed = out_put(o, short_escape, 2), i++;
        else if (c < 0x80)
            failed = out_u(o, c), i++;
        else if (!utf8)
            return 1;
        else {
            size_t k = utf8_at(s + i, n - i, &cp);
            if (k == 0)
                failed = out_u(o, 0xDC00 + c), i++;
            else if (cp >= 0x10000)
                failed = out_u(o, 0xD800 + ((cp - 0x10000) >> 10)) || out_u(o, 0xDC00 + ((cp - 0x10000) & 0x3FF)), i += k;
            else
                failed = out_u(o, cp), i += k;
        }
        if (failed)
            return -1;
    }
    return out_put(o, "\"", 1);
}

/* What walk_dir keeps of one entry: its manifest fields. */
typedef struct {
    PyObject *kind;
    long long size, mtime;
    unsigned long long mode, dev, ino, nlink;
    const char *error; /* NULL: none */
    const struct stat *wide; /* the stat whose mtime does not fit mtime (past 2262), or NULL */
} row_t;

/* The manifest row of an entry, as _walk._ROW: 0, 1 (not formatted: see out_text), -1. */
static int out_row(out_t *o, const row_t *r, long root, const char *rel, size_t rel_len,
                   const char *path, size_t path_len, int utf8) {
    int got;
    if (r->wide != NULL)
        return 1; /* (an mtime past 64 bits: Python formats it exactly) */
    if (out_put(o, o->len ? ",[\"" : "[\"", o->len ? 3 : 2) < 0 ||
        out_put(o, PyUnicode_AsUTF8(r->kind), (size_t)PyUnicode_GET_LENGTH(r->kind)) < 0 ||
        out_put(o, "\"", 1) < 0 || out_num(o, root) < 0 || out_put(o, ",", 1) < 0)
        return -1;
    if ((got = out_text(o, (const unsigned char *)rel, rel_len, utf8)) != 0 || out_put(o, ",", 1) < 0)
        return got ? got : -1;
    if ((got = out_text(o, (const unsigned char *)path, path_len, utf8)) != 0)
        return got;
    if (out_num(o, r->size) < 0 || out_num(o, r->mtime) < 0 || out_unum(o, r->mode) < 0 ||
        out_unum(o, r->dev) < 0 || out_unum(o, r->ino) < 0 || out_put(o, ",", 1) < 0)
        return -1;
    const char *error = r->error ? r->error : "";
    if ((got = out_text(o, (const unsigned char *)error, strlen(error), 1)) != 0)
        return got;
    if (out_unum(o, r->nlink) < 0 || out_put(o, "]", 1) < 0)
        return -1;
    return 0;
}

/* A new Entry of index, root and these fields (rel and path stolen), or NULL. */
static PyObject *new_entry(long long index, PyObject *root, PyObject *rel, PyObject *path, const row_t *r) {
    PyObject *values[N_FIELDS] = {
        PyLong_FromLongLong(index),
        Py_NewRef(r->kind),
        Py_NewRef(root),
        rel,
        path,
        PyLong_FromLongLong(r->size),
        r->wide != NULL ? mtime_ns_object(r->wide) : PyLong_FromLongLong(r->mtime),
        PyLong_FromUnsignedLongLong(r->mode),
        PyLong_FromUnsignedLongLong(r->dev),
        PyLong_FromUnsignedLongLong(r->ino),
        r->error ? PyUnicode_FromString(r->error) : Py_NewRef(empty_text),
        PyLong_FromUnsignedLongLong(r->nlink),
    };
    PyObject *entry = NULL;
    int complete = 1;
    for (size_t i = 0; i < N_FIELDS; i++)
        complete &= values[i] != NULL;
    if (complete)
        entry = entry_cls->tp_alloc(entry_cls, 0);
    if (entry == NULL) {
        for (size_t i = 0; i < N_FIELDS; i++)
            Py_XDECREF(values[i]);
        return NULL;
    }
    for (size_t i = 0; i < N_FIELDS; i++)
        *(PyObject **)((char *)entry + entry_offsets[i]) = values[i];
    return entry;
}

/* The bytes head + name. */
static PyObject *bytes_joined(const char *head, size_t head_len, const char *name, size_t len) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(head_len + len));
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), head, head_len);
        memcpy(PyBytes_AS_STRING(out) + head_len, name, len);
    }
    return out;
}

PyDoc_STRVAR(walk_dir_doc,
"walk_dir(path, follow, expect, rel, root, index, ancestors, utf8, /) -> (entries, rows, subdirs)\n\n"
"One directory of a first walk (_walk._Walker._list without an earlier run's entries): lists\n"
"path as scan_dir(path, follow, expect) does (raising as it does), and answers its entries as\n"
"Entry objects (entry_class) numbered from index, of root, rel + b'/' + name and path (+ '/')\n"
"+ name: files with their stat, directories, symlinks and special files with size 0 and nlink\n"
"1, an entry whose stat failed or a directory whose (dev, ino) is in ancestors (a loop) as an\n"
"error entry; rows, their manifest rows joined by ',' as _walk._plain_line or json.dumps\n"
"writes them (None where a name is not ASCII and utf8, that the filesystem encoding is UTF-8\n"
"with surrogateescape, is false); subdirs, (path, rel, (dev, ino), ancestors | {(dev, ino)})\n"
"of each directory to walk, in name order.");

static PyObject *walk_one_dir(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *path, *expect_obj, *rel, *root, *ancestors;
    int follow, utf8;
    long long index;
    unsigned long long expect[2];
    if (!PyArg_ParseTuple(args, "O&pOSO!LO!p", PyUnicode_FSConverter, &path, &follow, &expect_obj, &rel,
                          &PyLong_Type, &root, &index, &PyFrozenSet_Type, &ancestors, &utf8))
        return NULL;
    if (entry_cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "walk_dir: entry_class() was not called");
        Py_DECREF(path);
        return NULL;
    }
    if (!PyArg_ParseTuple(expect_obj, "KK", &expect[0], &expect[1])) {
        Py_DECREF(path);
        return NULL;
    }
    long root_no = PyLong_AsLong(root);
    if (root_no == -1 && PyErr_Occurred()) {
        Py_DECREF(path);
        return NULL;
    }
    dir_entry_t *listed = NULL;
    size_t n = 0;
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = list_dir(PyBytes_AS_STRING(path), follow, expect, &listed, &n);
    Py_END_ALLOW_THREADS;
    PyObject *entries = NULL, *subdirs = NULL, *rows = NULL, *result = NULL;
    char *prefix = NULL;
    out_t out = {NULL, 0, 0};
    int formatted = 1;
    if (err) {
        raise_listing(err, path);
        goto done;
    }
    /* The entries' paths start with path + '/' (a root "link/" has its '/'), their rels with rel + '/'. */
    size_t path_len = (size_t)PyBytes_GET_SIZE(path), rel_len = (size_t)PyBytes_GET_SIZE(rel);
    size_t path_head = path_len && PyBytes_AS_STRING(path)[path_len - 1] == '/' ? path_len : path_len + 1;
    prefix = PyMem_Malloc(path_head + rel_len + 1);
    entries = PyList_New((Py_ssize_t)n);
    subdirs = PyList_New(0);
    if (prefix == NULL || entries == NULL || subdirs == NULL) {
        if (prefix == NULL)
            PyErr_NoMemory();
        goto done;
    }
    char *rel_prefix = prefix + path_head;
    memcpy(prefix, PyBytes_AS_STRING(path), path_len);
    prefix[path_head - 1] = '/';
    memcpy(rel_prefix, PyBytes_AS_STRING(rel), rel_len);
    rel_prefix[rel_len] = '/';
    for (size_t i = 0; i < n; i++) {
        dir_entry_t *e = &listed[i];
        const struct stat *st = &e->st;
        row_t r = {kind_error, 0, 0, 0, 0, 0, 1, NULL};
        PyObject *key = NULL;
        if (e->err)
            r.error = strerror(e->err);
        else {
            r.mode = st->st_mode, r.dev = st->st_dev, r.ino = st->st_ino;
            if (!mtime_ns_fits(st, &r.mtime))
                r.wide = st;
            if (S_ISREG(st->st_mode))
                r.kind = kind_file, r.size = st->st_size, r.nlink = st->st_nlink;
            else if (S_ISLNK(st->st_mode))
                r.kind = kind_symlink;
            else if (!S_ISDIR(st->st_mode))
                r.kind = kind_special;
            else {
                r.kind = kind_dir;
                key = Py_BuildValue("(KK)", r.dev, r.ino);
                if (key == NULL)
                    goto done;
                int loop = PySet_Contains(ancestors, key);
                if (loop < 0) {
                    Py_DECREF(key);
                    goto done;
                }
                if (loop) {
                    Py_CLEAR(key);
                    row_t looped = {kind_error, 0, 0, 0, 0, 0, 1, "symlink loop"};
                    r = looped;
                }
            }
        }
        PyObject *child_path = bytes_joined(prefix, path_head, e->name, e->len);
        PyObject *child_rel = bytes_joined(rel_prefix, rel_len + 1, e->name, e->len);
        if (child_path == NULL || child_rel == NULL) {
            Py_XDECREF(child_path);
            Py_XDECREF(child_rel);
            Py_XDECREF(key);
            goto done;
        }
        if (formatted) {
            int got = out_row(&out, &r, root_no, PyBytes_AS_STRING(child_rel), rel_len + 1 + e->len,
                              PyBytes_AS_STRING(child_path), path_head + e->len, utf8);
            if (got < 0) {
                PyErr_NoMemory();
                Py_DECREF(child_path);
                Py_DECREF(child_rel);
                Py_XDECREF(key);
                goto done;
            }
            formatted = got == 0;
        }
        if (key != NULL) { /* a directory to walk: (path, rel, key, ancestors | {key}) */
            PyObject *below = PyFrozenSet_New(ancestors);
            PyObject *pending = NULL;
            if (below != NULL && PySet_Add(below, key) == 0)
                pending = PyTuple_Pack(4, child_path, child_rel, key, below);
            Py_XDECREF(below);
            Py_DECREF(key);
            if (pending == NULL || PyList_Append(subdirs, pending) < 0) {
                Py_XDECREF(pending);
                Py_DECREF(child_path);
                Py_DECREF(child_rel);
                goto done;
            }
            Py_DECREF(pending);
        }
        PyObject *entry = new_entry(index + (long long)i, root, child_rel, child_path, &r);
        if (entry == NULL)
            goto done;
        PyList_SET_ITEM(entries, (Py_ssize_t)i, entry);
    }
    rows = formatted ? PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.len) : Py_NewRef(Py_None);
    if (rows != NULL)
        result = PyTuple_Pack(3, entries, rows, subdirs);
done:
    for (size_t i = 0; i < n; i++)
        free(listed[i].name);
    free(listed);
    PyMem_Free(prefix);
    PyMem_Free(out.data);
    Py_XDECREF(entries);
    Py_XDECREF(subdirs);
    Py_XDECREF(rows);
    Py_DECREF(path);
    return result;
}

/* ---- scan_tree ---- */

/* A growable array of n items of size `size` (realloc'ed by twos). */
typedef struct {
    void *items;
    size_t n, cap, size;
} vec_t;

static void *vec_push(vec_t *v) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        void *more = realloc(v->items, cap * v->size);
        if (more == NULL)
            return NULL;
        v->items = more, v->cap = cap;
    }
    return (char *)v->items + v->size * v->n++;
}

typedef struct {
    char *path;
    size_t len;
    long long size;
    unsigned long long dev, ino, nlink;
} tree_file_t;

typedef struct {
    char *path;
    size_t len;
    int err; /* an errno, LOOP or REPLACED */
} tree_error_t;

#define LOOP (-1) /* a directory that is one of its own ancestors */

/* A directory met: its (dev, ino) and its parent's node, for the loop check. */
typedef struct dir_node {
    unsigned long long dev, ino;
    struct dir_node *parent;
} dir_node_t;

typedef struct {
    char *path; /* malloc'ed */
    size_t len;
    dir_node_t *node; /* malloc'ed, listed in `nodes` (freed at the end) */
} to_list_t;

/* An open-addressing set/counter of (a, b) keys (a power-of-two table, grown at half full). */
typedef struct {
    unsigned long long a, b;
    size_t count; /* 0: an empty slot */
} slot_t;

typedef struct {
    slot_t *slots;
    size_t cap, used;
} table_t;

static size_t slot_of(const table_t *t, unsigned long long a, unsigned long long b) {
    unsigned long long h = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL) * 0xC2B2AE3D27D4EB4FULL;
    h ^= h >> 29;
    size_t i = (size_t)h & (t->cap - 1);
    while (t->slots[i].count && (t->slots[i].a != a || t->slots[i].b != b))
        i = (i + 1) & (t->cap - 1);
    return i;
}

/* Add one to (a, b)'s count: the count after, or 0 when out of memory. */
static size_t table_add(table_t *t, unsigned long long a, unsigned long long b) {
    if (2 * (t->used + 1) > t->cap) {
        table_t bigger = {calloc(t->cap ? 2 * t->cap : 1024, sizeof(slot_t)), t->cap ? 2 * t->cap : 1024, t->used};
        if (bigger.slots == NULL)
            return 0;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].count)
                bigger.slots[slot_of(&bigger, t->slots[i].a, t->slots[i].b)] = t->slots[i];
        free(t->slots);
        *t = bigger;
    }
    size_t i = slot_of(t, a, b);
    if (!t->slots[i].count) {
        t->slots[i].a = a, t->slots[i].b = b;
        t->used++;
    }
    return ++t->slots[i].count;
}

static size_t table_get(const table_t *t, unsigned long long a, unsigned long long b) {
    return t->cap ? t->slots[slot_of(t, a, b)].count : 0;
}

static char *joined(const char *dir, size_t dlen, const char *name, size_t nlen, size_t *len) {
    char *path = malloc(dlen + 1 + nlen + 1);
    if (path == NULL)
        return NULL;
    memcpy(path, dir, dlen);
    size_t at = dlen;
    if (dlen == 0 || dir[dlen - 1] != '/') /* a root `link/` keeps its one slash */
        path[at++] = '/';
    memcpy(path + at, name, nlen + 1);
    *len = at + nlen;
    return path;
}

typedef struct {
    vec_t files;  /* tree_file_t */
    vec_t errors; /* tree_error_t */
    vec_t stack;  /* to_list_t */
    vec_t nodes;  /* dir_node_t *: every node, freed at the end */
    vec_t subdirs; /* to_list_t: one directory's, pushed on the stack in reverse */
} walk_t;

static int add_error(walk_t *w, char *path, size_t len, int err) {
    tree_error_t *e = vec_push(&w->errors);
    if (e == NULL) {
        free(path);
        return ENOMEM;
    }
    e->path = path, e->len = len, e->err = err;
    return 0;
}

/* List the directory d (whose path the walk now owns) into w; 0 or ENOMEM. */
static int walk_dir(walk_t *w, to_list_t d) {
    dir_entry_t *entries = NULL;
    size_t n = 0;
    unsigned long long expect[2] = {d.node->dev, d.node->ino};
    int err = list_dir(d.path, 0, expect, &entries, &n);
    if (err)
        return add_error(w, d.path, d.len, err);
    int failed = 0;
    w->subdirs.n = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        dir_entry_t *e = &entries[i];
        size_t len;
        mode_t mode = e->st.st_mode;
        if (!e->err && !S_ISREG(mode) && !S_ISDIR(mode))
            continue; /* symlinks and special files: not listed */
        char *path = joined(d.path, d.len, e->name, e->len, &len);
        if (path == NULL) {
            failed = ENOMEM;
            break;
        }
        if (e->err) {
            failed = add_error(w, path, len, e->err);
        } else if (S_ISREG(mode)) {
            tree_file_t *f = vec_push(&w->files);
            if (f == NULL) {
                free(path);
                failed = ENOMEM;
                break;
            }
            f->path = path, f->len = len, f->size = (long long)e->st.st_size;
            f->dev = (unsigned long long)e->st.st_dev, f->ino = (unsigned long long)e->st.st_ino;
            f->nlink = (unsigned long long)e->st.st_nlink;
        } else {
            int loop = 0;
            for (dir_node_t *a = d.node; a != NULL && !loop; a = a->parent)
                loop = a->dev == (unsigned long long)e->st.st_dev && a->ino == (unsigned long long)e->st.st_ino;
            if (loop) {
                failed = add_error(w, path, len, LOOP);
                continue;
            }
            dir_node_t *node = malloc(sizeof *node);
            dir_node_t **slot = node ? vec_push(&w->nodes) : NULL;
            to_list_t *sub = slot ? vec_push(&w->subdirs) : NULL;
            if (sub == NULL) {
                if (slot != NULL)
                    w->nodes.n--; /* its slot, not yet filled: freed at the end otherwise */
                free(node);
                free(path);
                failed = ENOMEM;
                break;
            }
            *slot = node;
            node->dev = (unsigned long long)e->st.st_dev, node->ino = (unsigned long long)e->st.st_ino;
            node->parent = d.node;
            sub->path = path, sub->len = len, sub->node = node;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
    free(d.path);
    to_list_t *subs = w->subdirs.items;
    for (size_t i = w->subdirs.n; i-- > 0;) {
        to_list_t *top = failed ? NULL : vec_push(&w->stack);
        if (top == NULL) {
            free(subs[i].path);
            failed = ENOMEM;
            continue;
        }
        *top = subs[i];
    }
    return failed;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* stopped() is asked at most this often (seconds) while the tree is listed. */
#define STOP_CHECK_SECONDS 0.01

PyDoc_STRVAR(scan_tree_doc,
"scan_tree(roots, min_size, stopped, /) -> (files, errors, scanned) or None\n\n"
"Walk roots (bytes paths, normalized) as _walk.list_files does and keep, as _candidates\n"
"does, the regular files of at least min_size bytes (one name per inode, the first) that\n"
"share their size with another: files, [(number, path, size)] numbered in walk order;\n"
"errors, [(path, strerror or 'symlink loop')] of what could not be listed or stat'ed;\n"
"scanned, every regular file found. None as soon as stopped() is true (asked every 10 ms),\n"
"or, where stopped is a bytearray, as soon as its first byte is not 0 (read at every\n"
"directory without taking the GIL: a thread listing while another runs Python code does\n"
"not wait for the GIL every 10 ms to ask).");

static PyObject *scan_tree(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *roots, *stopped;
    long long min_size;
    if (!PyArg_ParseTuple(args, "O!LO", &PyList_Type, &roots, &min_size, &stopped))
        return NULL;
    walk_t w = {{NULL, 0, 0, sizeof(tree_file_t)}, {NULL, 0, 0, sizeof(tree_error_t)},
                {NULL, 0, 0, sizeof(to_list_t)}, {NULL, 0, 0, sizeof(dir_node_t *)},
                {NULL, 0, 0, sizeof(to_list_t)}};
    PyObject *result = NULL;
    int err = 0, halted = 0;
    table_t inodes = {NULL, 0, 0}, sizes = {NULL, 0, 0};
    unsigned char *keep = NULL;
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(roots) && !err && !halted; r++) {
        PyObject *root = PyList_GET_ITEM(roots, r);
        if (!PyBytes_Check(root)) {
            PyErr_SetString(PyExc_TypeError, "roots must be bytes");
            goto done;
        }
        size_t len = (size_t)PyBytes_GET_SIZE(root);
        char *path = malloc(len + 1);
        if (path == NULL) {
            err = ENOMEM;
            break;
        }
        memcpy(path, PyBytes_AS_STRING(root), len + 1);
        struct stat st;
        if (strlen(path) != len) {
            free(path);
            PyErr_SetString(PyExc_ValueError, "a root with a NUL byte");
            goto done;
        }
        if (lstat(path, &st) < 0) {
            err = add_error(&w, path, len, errno);
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            tree_file_t *f = S_ISREG(st.st_mode) ? vec_push(&w.files) : NULL;
            if (f == NULL) {
                free(path);
                err = S_ISREG(st.st_mode) ? ENOMEM : 0;
                continue;
            }
            f->path = path, f->len = len, f->size = (long long)st.st_size;
            f->dev = (unsigned long long)st.st_dev, f->ino = (unsigned long long)st.st_ino;
            f->nlink = (unsigned long long)st.st_nlink;
            continue;
        }
        dir_node_t *node = malloc(sizeof *node);
        dir_node_t **slot = node ? vec_push(&w.nodes) : NULL;
        to_list_t *top = slot ? vec_push(&w.stack) : NULL;
        if (top == NULL) {
            if (slot != NULL)
                w.nodes.n--; /* its slot, not yet filled: freed at the end otherwise */
            free(node);
            free(path);
            err = ENOMEM;
            break;
        }
        *slot = node;
        node->dev = (unsigned long long)st.st_dev, node->ino = (unsigned long long)st.st_ino;
        node->parent = NULL;
        top->path = path, top->len = len, top->node = node;
        double checked = 0;
        /* A bytearray's first byte, read without the GIL (the caller keeps it alive). */
        volatile const char *flag = PyByteArray_Check(stopped) && PyByteArray_GET_SIZE(stopped)
                                        ? PyByteArray_AS_STRING(stopped)
                                        : NULL;
        Py_BEGIN_ALLOW_THREADS;
        while (w.stack.n && !err) {
            int stop = 0;
            if (flag != NULL) {
                stop = *flag != 0;
            } else {
                double t = now_seconds();
                if (t - checked >= STOP_CHECK_SECONDS) {
                    checked = t;
                    Py_BLOCK_THREADS;
                    PyObject *answer = PyObject_CallNoArgs(stopped);
                    stop = answer == NULL ? -1 : PyObject_IsTrue(answer);
                    Py_XDECREF(answer);
                    Py_UNBLOCK_THREADS;
                }
            }
            if (stop != 0) { /* stopped (1), or stopped() raised (-1: its error set) */
                halted = stop;
                break;
            }
            to_list_t d = ((to_list_t *)w.stack.items)[--w.stack.n];
            err = walk_dir(&w, d);
        }
        Py_END_ALLOW_THREADS;
    }
    if (halted < 0)
        goto done;
    if (halted) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    /* The candidates: one name per inode (the first), at least min_size, a shared size. */
    tree_file_t *files = w.files.items;
    keep = calloc(w.files.n ? w.files.n : 1, 1);
    if (keep == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < w.files.n; i++) {
        if (files[i].nlink > 1) {
            size_t seen = table_add(&inodes, files[i].dev, files[i].ino);
            if (seen == 0) {
                PyErr_NoMemory();
                goto done;
            }
            if (seen > 1)
                continue;
        }
        if (files[i].size < min_size)
            continue;
        keep[i] = 1;
        if (table_add(&sizes, (unsigned long long)files[i].size, 0) == 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    PyObject *out = PyList_New(0), *errors = PyList_New((Py_ssize_t)w.errors.n);
    if (out == NULL || errors == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(errors);
        goto done;
    }
    long long number = 0;
    for (size_t i = 0; i < w.files.n; i++) {
        if (!keep[i] || table_get(&sizes, (unsigned long long)files[i].size, 0) < 2)
            continue;
        PyObject *item = Py_BuildValue("(Ly#L)", number++, files[i].path, (Py_ssize_t)files[i].len, files[i].size);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            Py_DECREF(errors);
            goto done;
        }
        Py_DECREF(item);
    }
    tree_error_t *errs = w.errors.items;
    for (size_t i = 0; i < w.errors.n; i++) {
        PyObject *item = Py_BuildValue("(y#s)", errs[i].path, (Py_ssize_t)errs[i].len,
                                       errs[i].err == LOOP       ? "symlink loop"
                                       : errs[i].err == REPLACED ? REPLACED_TEXT
                                                                 : strerror(errs[i].err));
        if (item == NULL) {
            Py_DECREF(out);
            Py_DECREF(errors);
            goto done;
        }
        PyList_SET_ITEM(errors, (Py_ssize_t)i, item);
    }
    result = Py_BuildValue("(NNn)", out, errors, (Py_ssize_t)w.files.n);
done:
    for (size_t i = 0; i < w.files.n; i++)
        free(((tree_file_t *)w.files.items)[i].path);
    for (size_t i = 0; i < w.errors.n; i++)
        free(((tree_error_t *)w.errors.items)[i].path);
    for (size_t i = 0; i < w.stack.n; i++)
        free(((to_list_t *)w.stack.items)[i].path);
    for (size_t i = 0; i < w.nodes.n; i++)
        free(((dir_node_t **)w.nodes.items)[i]);
    free(w.files.items);
    free(w.errors.items);
    free(w.stack.items);
    free(w.nodes.items);
    free(w.subdirs.items);
    free(inodes.slots);
    free(sizes.slots);
    free(keep);
    return result;
}

/* ---- the duplicates report ---- */

/* Whether json.dumps writes this byte of an ASCII string as it is: not a control character,
 * DEL, a quote or a backslash (nor a byte of a non-ASCII character). */
static inline int json_plain(unsigned char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

/* A growable buffer of the report's JSON text. */
typedef struct {
    char *data;
    size_t len, cap;
} text_t;

static int text_add(text_t *t, const void *bytes, size_t len) {
    if (t->len + len > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (cap < t->len + len)
            cap *= 2;
        char *data = realloc(t->data, cap);
        if (data == NULL)
            return -1;
        t->data = data, t->cap = cap;
    }
    memcpy(t->data + t->len, bytes, len);
    t->len += len;
    return 0;
}

#define TEXT_ADD(t, literal) text_add((t), (literal), sizeof(literal) - 1)

static PyObject *k_size, *k_digest, *k_paths; /* the groups' keys, interned once */

static int report_keys(void) {
    k_size = PyUnicode_InternFromString("size");
    k_digest = PyUnicode_InternFromString("digest");
    k_paths = PyUnicode_InternFromString("paths");
    if (k_size == NULL || k_digest == NULL || k_paths == NULL) {
        Py_CLEAR(k_size);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(report_groups_doc,
"report_groups(files, found, /) -> (groups, text)\n\n"
"The duplicates report's groups (_duplicates._report) for found, [(size, digest,\n"
"[number, ...])] in report order, each number a candidate of files ([(number, path, size)],\n"
"the scan's): groups, a dict {'size', 'digest', 'paths'} a group, its paths decoded as\n"
"os.fsdecode does and sorted as str; text, the groups' JSON as json.dumps writes them,\n"
"', '-separated, without the list's brackets, or None where a path or digest holds a\n"
"character json.dumps escapes (or one that is not ASCII).");

static PyObject *report_groups(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *files, *found;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &files, &PyList_Type, &found))
        return NULL;
    if (k_size == NULL && report_keys() < 0)
        return NULL;
    /* found's entries are held (a tuple: its size, digest and members list with it) and
     * files' paths while decoded; bounds are read again after each allocation (one of a
     * container may run the collector, and a finalizer any code). */
    Py_ssize_t n = PyList_GET_SIZE(found);
    PyObject *groups = PyList_New(n), *result = NULL, *entry = NULL;
    if (groups == NULL)
        return NULL;
    int plain = 1; /* no string to escape: the text is made */
    for (Py_ssize_t g = 0; g < n; g++) {
        Py_CLEAR(entry);
        if (g >= PyList_GET_SIZE(found)) {
            PyErr_SetString(PyExc_RuntimeError, "found changed during report_groups");
            goto done;
        }
        entry = Py_NewRef(PyList_GET_ITEM(found, g));
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(entry, 1)) ||
            !PyList_Check(PyTuple_GET_ITEM(entry, 2))) {
            PyErr_Format(PyExc_TypeError, "found[%zd]: not a (size, digest, [number]) tuple", g);
            goto done;
        }
        PyObject *digest = PyTuple_GET_ITEM(entry, 1), *members = PyTuple_GET_ITEM(entry, 2);
        if (plain && PyUnicode_IS_ASCII(digest)) {
            const unsigned char *c = PyUnicode_1BYTE_DATA(digest);
            for (Py_ssize_t j = 0; j < PyUnicode_GET_LENGTH(digest) && plain; j++)
                plain = json_plain(c[j]);
        } else {
            plain = 0;
        }
        Py_ssize_t m = PyList_GET_SIZE(members);
        PyObject *paths = PyList_New(m);
        if (paths == NULL)
            goto done;
        for (Py_ssize_t k = 0; k < m; k++) {
            if (k >= PyList_GET_SIZE(members)) {
                PyErr_Format(PyExc_RuntimeError, "found[%zd] changed during report_groups", g);
                Py_DECREF(paths);
                goto done;
            }
            Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(members, k)); /* (runs no code) */
            if (i == -1 && PyErr_Occurred()) {
                Py_DECREF(paths);
                goto done;
            }
            PyObject *file =
                i >= 0 && i < PyList_GET_SIZE(files) ? PyList_GET_ITEM(files, i) : NULL;
            if (file == NULL || !PyTuple_Check(file) || PyTuple_GET_SIZE(file) < 2 ||
                !PyBytes_Check(PyTuple_GET_ITEM(file, 1))) {
                PyErr_Format(file == NULL ? PyExc_IndexError : PyExc_TypeError,
                             "found[%zd]: files[%zd] is no (number, path, size)", g, i);
                Py_DECREF(paths);
                goto done;
            }
            PyObject *raw = Py_NewRef(PyTuple_GET_ITEM(file, 1)), *path;
            const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(raw);
            Py_ssize_t len = PyBytes_GET_SIZE(raw), j = 0;
            while (j < len && json_plain(b[j]))
                j++;
            if (j == len) { /* printable ASCII: its str is its bytes */
                path = PyUnicode_New(len, 127);
                if (path != NULL)
                    memcpy(PyUnicode_1BYTE_DATA(path), b, (size_t)len);
            } else { /* as os.fsdecode: the file system's encoding, surrogateescape */
                plain = 0;
                path = PyUnicode_DecodeFSDefaultAndSize((const char *)b, len);
            }
            Py_DECREF(raw);
            if (path == NULL) {
                Py_DECREF(paths);
                goto done;
            }
            PyList_SET_ITEM(paths, k, path);
        }
        PyObject *group = PyList_Sort(paths) < 0 ? NULL : PyDict_New();
        if (group == NULL || PyDict_SetItem(group, k_size, PyTuple_GET_ITEM(entry, 0)) < 0 ||
            PyDict_SetItem(group, k_digest, digest) < 0 ||
            PyDict_SetItem(group, k_paths, paths) < 0) {
            Py_XDECREF(group);
            Py_DECREF(paths);
            goto done;
        }
        Py_DECREF(paths);
        PyList_SET_ITEM(groups, g, group);
    }
    if (!plain) {
        result = Py_BuildValue("(OO)", groups, Py_None);
        goto done;
    }
    /* {"size": S, "digest": "D", "paths": ["P", "P"]}, ... (all ASCII, nothing escaped) */
    text_t t = {NULL, 0, 0};
    int failed = 0;
    for (Py_ssize_t g = 0; g < n && !failed; g++) {
        /* (From the groups made above, which no other code has seen: not found again.) */
        PyObject *group = PyList_GET_ITEM(groups, g);
        PyObject *digest = PyDict_GetItemWithError(group, k_digest);
        PyObject *paths = PyDict_GetItemWithError(group, k_paths);
        PyObject *number = PyDict_GetItemWithError(group, k_size);
        PyObject *size = number == NULL ? NULL : PyObject_Str(number); /* as the f-string */
        if (digest == NULL || paths == NULL || size == NULL) {
            Py_XDECREF(size);
            failed = 1;
            break;
        }
        failed |= (g ? TEXT_ADD(&t, ", {\"size\": ") : TEXT_ADD(&t, "{\"size\": ")) ||
                  text_add(&t, PyUnicode_1BYTE_DATA(size), (size_t)PyUnicode_GET_LENGTH(size)) ||
                  TEXT_ADD(&t, ", \"digest\": \"") ||
                  text_add(&t, PyUnicode_1BYTE_DATA(digest),
                           (size_t)PyUnicode_GET_LENGTH(digest)) ||
                  TEXT_ADD(&t, "\", \"paths\": [\"");
        Py_DECREF(size);
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(paths) && !failed; k++) {
            PyObject *path = PyList_GET_ITEM(paths, k);
            failed |= (k && TEXT_ADD(&t, "\", \"")) ||
                      text_add(&t, PyUnicode_1BYTE_DATA(path), (size_t)PyUnicode_GET_LENGTH(path));
        }
        failed |= TEXT_ADD(&t, "\"]}");
    }
    PyObject *text = failed ? NULL : PyUnicode_New((Py_ssize_t)t.len, 127);
    if (text != NULL) {
        if (t.len) /* (t.data is NULL for no group) */
            memcpy(PyUnicode_1BYTE_DATA(text), t.data, t.len);
        result = Py_BuildValue("(ON)", groups, text);
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    free(t.data);
done:
    Py_XDECREF(entry);
    Py_DECREF(groups);
    return result;
}

/* ---- the duplicates report's lines (the command line's stdout) ---- */

static const char *const size_units[] = {"B", "kB", "MB", "GB", "TB", "PB"};

/* `parjobs.cli._format.size(n)` for 0 <= n < 2**53 into buf (as its text, NUL-ended), the
 * same digits: n and 1000**k are exact doubles there, so n / 1000**k and the unit's limits
 * (999.5 * 1000**k) are the doubles Python computes, and PyOS_double_to_string is what
 * float.__format__ calls for 'f' with a precision. 0 on success, 1 for a size it leaves to
 * Python, -1 on an error (set). */
static int size_text(long long n, char *buf, size_t cap) {
    if (n < 0 || n >= (1LL << 53))
        return 1;
    if (n < 1000) {
        snprintf(buf, cap, "%lld B", n);
        return 0;
    }
    double d = (double)n, power = 1000.0;
    int exp = 1;
    while (exp < 5 && d >= 999.5 * power) { /* _LIMITS[exp]: then the next unit */
        exp++;
        power *= 1000.0;
    }
    double value = d / power;
    char *digits = PyOS_double_to_string(value, 'f', value >= 100 ? 0 : value >= 10 ? 1 : 2, 0,
                                         NULL);
    if (digits == NULL)
        return -1;
    size_t len = strlen(digits), unit = strlen(size_units[exp]);
    if (len + unit + 2 <= cap) { /* (always: at most 15 digits) */
        memcpy(buf, digits, len);
        buf[len] = ' ';
        memcpy(buf + len + 1, size_units[exp], unit + 1);
    }
    PyMem_Free(digits);
    return len + unit + 2 <= cap ? 0 : 1;
}

/* An ASCII str of the len bytes at text. */
static PyObject *ascii_str(const char *text, Py_ssize_t len) {
    PyObject *str = PyUnicode_New(len, 127);
    if (str != NULL)
        memcpy(PyUnicode_1BYTE_DATA(str), text, (size_t)len);
    return str;
}

PyDoc_STRVAR(group_lines_doc,
"group_lines(groups, size, /) -> list or None\n\n"
"The lines parjobs dupes prints for a duplicates result's groups (cli._results):\n"
"'# N copies of SIZE', the group's paths, an empty line between groups; SIZE as size(n)\n"
"writes it (computed here for sizes below 2**53, the same text; size is called for the\n"
"others). None where a group is not a dict with an int 'size' and a list of str 'paths',\n"
"or size returns no str (the caller then makes them).");

/* The head line of a group, "# M copies of SIZE", M the length of paths once SIZE is
 * written (as the Python loop reads it). 0 on success (*head set), 1 for a group to leave
 * to the caller, -1 on an error (set). size_of may run any Python code: the caller holds
 * size and paths, and nothing borrowed is kept across the call. */
static int group_head(PyObject *size, PyObject *paths, PyObject *size_of, PyObject **head) {
    *head = NULL;
    int overflow = 0;
    long long bytes = PyLong_AsLongLongAndOverflow(size, &overflow);
    if (bytes == -1 && PyErr_Occurred())
        return -1;
    char text[64];
    int done = overflow ? 1 : size_text(bytes, text, sizeof text);
    if (done < 0)
        return -1;
    if (done == 0) {
        char line[96];
        int len = snprintf(line, sizeof line, "# %zd copies of %s", PyList_GET_SIZE(paths), text);
        *head = len > 0 && (size_t)len < sizeof line
                    ? ascii_str(line, len)
                    : PyUnicode_FromFormat("# %zd copies of %s", PyList_GET_SIZE(paths), text);
        return *head == NULL ? -1 : 0;
    }
    PyObject *written = PyObject_CallOneArg(size_of, size);
    if (written == NULL)
        return -1;
    if (!PyUnicode_CheckExact(written)) { /* (formatted as the f-string would: the caller) */
        Py_DECREF(written);
        return 1;
    }
    *head = PyUnicode_FromFormat("# %zd copies of %U", PyList_GET_SIZE(paths), written);
    Py_DECREF(written);
    return *head == NULL ? -1 : 0;
}

static PyObject *group_lines(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *groups, *size_of;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &groups, &size_of))
        return NULL;
    if (k_size == NULL && report_keys() < 0)
        return NULL;
    /* Each group, its size and paths list are held while used, and groups' length read
     * again for each (as a for loop over it does): size_of (or a dict lookup's __eq__, or a
     * finalizer the collector runs) may change or drop what a borrowed reference points at. */
    PyObject *lines = PyList_New(0), *empty = PyUnicode_New(0, 0);
    PyObject *group = NULL, *size = NULL, *paths = NULL, *result = NULL;
    if (lines == NULL || empty == NULL)
        goto done;
    for (Py_ssize_t g = 0; g < PyList_GET_SIZE(groups); g++) {
        group = Py_NewRef(PyList_GET_ITEM(groups, g));
        if (!PyDict_CheckExact(group))
            goto other;
        size = PyDict_GetItemWithError(group, k_size);
        Py_XINCREF(size);
        paths = size != NULL ? PyDict_GetItemWithError(group, k_paths) : NULL;
        Py_XINCREF(paths);
        if (PyErr_Occurred())
            goto done;
        if (size == NULL || paths == NULL || !PyLong_CheckExact(size) || !PyList_CheckExact(paths))
            goto other;
        PyObject *head;
        int made = group_head(size, paths, size_of, &head);
        if (made < 0)
            goto done;
        if (made > 0)
            goto other;
        /* The paths as they are now (size_of may have run): each a str, appended with no
         * Python code between the check and the append. */
        Py_ssize_t m = PyList_GET_SIZE(paths);
        for (Py_ssize_t k = 0; k < m; k++)
            if (!PyUnicode_Check(PyList_GET_ITEM(paths, k))) {
                Py_DECREF(head);
                goto other;
            }
        if ((g && PyList_Append(lines, empty) < 0) || PyList_Append(lines, head) < 0) {
            Py_DECREF(head);
            goto done;
        }
        Py_DECREF(head);
        for (Py_ssize_t k = 0; k < m; k++)
            if (PyList_Append(lines, PyList_GET_ITEM(paths, k)) < 0)
                goto done;
        Py_CLEAR(group);
        Py_CLEAR(size);
        Py_CLEAR(paths);
    }
    result = Py_NewRef(lines);
    goto done;
other:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(group);
    Py_XDECREF(size);
    Py_XDECREF(paths);
    Py_XDECREF(lines);
    Py_XDECREF(empty);
    return result;
}

/* ---- the vector width ---- */

static const char *const vector_names[] = {"scalar", "sse2", "avx2", "avx512", "neon", "vsx"};

PyDoc_STRVAR(xxh3_vector_doc,
"xxh3_vector() -> str\n\n"
"The kernels XXH3 runs on inputs over 240 bytes: 'scalar', 'sse2', 'avx2', 'avx512' (x86:\n"
"the widest the CPU and OS support), or what the compiler targeted ('neon', 'vsx', ...).");

static int vector_now(void) {
#if FS_DISPATCH
    for (int v = 0; v < XXH_NB_DISPATCHES; v++)
        if (XXH_kDispatch128[v].update == XXH_g_dispatch128.update)
            return v;
    return -1;
#else
    return XXH_VECTOR;
#endif
}

static PyObject *xxh3_vector(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    int v = vector_now();
    return PyUnicode_FromString(v >= 0 && (size_t)v < COUNT(vector_names) ? vector_names[v] : "?");
}

PyDoc_STRVAR(force_xxh3_vector_doc,
"_force_xxh3_vector(name, /)\n\n"
"For the tests only: run XXH3 on the kernels `name` (one xxh3_vector() may answer that this\n"
"CPU supports), or on the widest again with name=None. Not for use while hashing.");

static PyObject *force_xxh3_vector(PyObject *self, PyObject *arg) {
    (void)self;
    if (arg == Py_None) {
#if FS_DISPATCH
        XXH_setDispatch();
#endif
        Py_RETURN_NONE;
    }
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "name must be a str or None");
        return NULL;
    }
    int want = -1;
    for (size_t v = 0; v < COUNT(vector_names); v++)
        if (strcmp(name, vector_names[v]) == 0)
            want = (int)v;
#if FS_DISPATCH
    if (want >= 0 && want < XXH_NB_DISPATCHES && want <= XXH_featureTest() &&
        XXH_kDispatch128[want].update != NULL) {
        XXH_g_dispatch = XXH_kDispatch[want];
        XXH_g_dispatch128 = XXH_kDispatch128[want];
        Py_RETURN_NONE;
    }
#else
    if (want == XXH_VECTOR)
        Py_RETURN_NONE;
#endif
    PyErr_Format(PyExc_ValueError, "XXH3 cannot run on %R kernels here", arg);
    return NULL;
}

static PyMethodDef methods[] = {
    {"content_ids", content_ids, METH_VARARGS, content_ids_doc},
    {"full_hashes", full_hashes, METH_VARARGS, full_hashes_doc},
    {"scan_dir", scan_dir, METH_VARARGS, scan_dir_doc},
    {"walk_dir", walk_one_dir, METH_VARARGS, walk_dir_doc},
    {"entry_class", entry_class, METH_VARARGS, entry_class_doc},
    {"scan_tree", scan_tree, METH_VARARGS, scan_tree_doc},
    {"report_groups", report_groups, METH_VARARGS, report_groups_doc},
    {"group_lines", group_lines, METH_VARARGS, group_lines_doc},
    {"xxh3_vector", xxh3_vector, METH_NOARGS, xxh3_vector_doc},
    {"_force_xxh3_vector", force_xxh3_vector, METH_O, force_xxh3_vector_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastscan",
    "List directories and compute content ids in one call, without the GIL.", -1, methods,
};

static const int_constant_t constants[] = {
    {"API", FS_API},
    {"CONTENT_ID_SMALL_LIMIT", CONTENT_ID_SMALL_LIMIT},
    {"CONTENT_ID_BLOCK", CONTENT_ID_BLOCK},
    {"CONTENT_ID_SAMPLES", CONTENT_ID_SAMPLES},
    {"CONTENT_ID_ALIGN", CONTENT_ID_ALIGN},
    {"NOT_REGULAR", FS_NOT_REGULAR},
    {"CHANGED", FS_CHANGED},
    {"STOPPED", FS_STOPPED},
};

PyMODINIT_FUNC PyInit__fastscan(void) {
#if FS_DISPATCH
    XXH_setDispatch(); /* now, not lazily in a thread without the GIL */
#endif
    PyObject *m = create_module(&module, constants, COUNT(constants));
    if (m == NULL)
        return NULL;
    PyObject *types = PyTuple_New(COUNT(unstable_types));
    if (types == NULL)
        goto error;
    for (size_t i = 0; i < COUNT(unstable_types); i++) {
        PyObject *type = PyLong_FromUnsignedLong(unstable_types[i]);
        if (type == NULL) {
            Py_DECREF(types);
            goto error;
        }
        PyTuple_SET_ITEM(types, i, type);
    }
    if (PyModule_AddObject(m, "UNSTABLE_INODES", types) < 0) {
        Py_DECREF(types);
        goto error;
    }
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
