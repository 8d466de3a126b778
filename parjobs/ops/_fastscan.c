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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

/* The calling convention, checked by _hashing.py and _walk.py: a build that differs is ignored. */
#define FS_API 1

/* The content id layout (exported: _hashing.py refuses a build whose layout differs). */
#define CONTENT_ID_SMALL_LIMIT (100 * 1024)
#define CONTENT_ID_BLOCK (8 * 1024)
#define CONTENT_ID_SAMPLES 4
#define CONTENT_ID_ALIGN (4 * 1024)

/* content_ids' codes besides a positive errno (exported). */
#define FS_NOT_REGULAR (-1) /* not a regular file */
#define FS_CHANGED (-2)     /* not the listed size, or changed while read */

#define SIZE_PREFIX 8
/* The most content_id hashes: the size, then the whole of a small file. */
#define ID_BUFFER (SIZE_PREFIX + CONTENT_ID_SMALL_LIMIT)

static long long mtime_ns_of(const struct stat *st) {
    return (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

/* Read exactly len bytes at offset (short reads are legal; EOF is a change). */
static int read_exactly(int fd, unsigned char *buf, size_t len, off_t offset) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, offset + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return FS_CHANGED;
        done += (size_t)n;
    }
    return 0;
}

/* The content id of one file into digest; 0 or a code. buf holds ID_BUFFER bytes. */
static int content_id_of(const char *path, long long size, unsigned char *buf,
                         XXH128_canonical_t *digest) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct stat before, after;
    int err = 0;
    if (fstat(fd, &before) < 0) {
        err = errno;
        goto out;
    }
    if (!S_ISREG(before.st_mode)) {
        err = FS_NOT_REGULAR;
        goto out;
    }
    if ((long long)before.st_size != size) {
        err = FS_CHANGED;
        goto out;
    }
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
    if (fstat(fd, &after) < 0) {
        err = errno;
        goto out;
    }
    if (after.st_size != before.st_size || mtime_ns_of(&after) != mtime_ns_of(&before)) {
        err = FS_CHANGED;
        goto out;
    }
    XXH128_canonicalFromHash(digest, XXH3_128bits(buf, len));
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
"content_ids(items, /) -> list\n\n"
"The content id of each (path, size) in items: its lowercase hex string, or an int code\n"
"(a positive errno, NOT_REGULAR, or CHANGED: not that size, or changed while read).");

static PyObject *content_ids(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    id_item_t *items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(id_item_t));
    unsigned char *buf = PyMem_Malloc(ID_BUFFER);
    char *names = NULL; /* every path, NUL-terminated: the list is not touched without the GIL */
    PyObject *results = NULL;
    if (items == NULL || buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i), *path;
        if (!PyTuple_Check(item)) {
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
        items[i].result = content_id_of(items[i].path, items[i].size, buf, &items[i].digest);
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
    PyMem_Free(items);
    PyMem_Free(buf);
    PyMem_Free(names);
    return results;
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

/* List the directory at path into *out (names and stats, unsorted); 0 or an errno. */
static int list_dir(const char *path, int follow, dir_entry_t **out, size_t *count) {
    int dfd = open(path, O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno;
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
    qsort(entries, n, sizeof *entries, by_name);
    *out = entries;
    *count = n;
    return 0;
}

PyDoc_STRVAR(scan_dir_doc,
"scan_dir(path, follow, /) -> list\n\n"
"The entries of the directory at path (bytes), sorted by name: (name, (mode, size, mtime_ns,\n"
"dev, ino, nlink), '') each, or (name, None, strerror) where its stat failed. lstat unless\n"
"follow (then stat, and the lstat of a broken link). OSError if the directory cannot be read.");

static PyObject *stat_tuple(const struct stat *st) {
    return Py_BuildValue("(kLLKKK)", (unsigned long)st->st_mode, (long long)st->st_size,
                         mtime_ns_of(st), (unsigned long long)st->st_dev,
                         (unsigned long long)st->st_ino, (unsigned long long)st->st_nlink);
}

static PyObject *scan_dir(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *path;
    int follow;
    if (!PyArg_ParseTuple(args, "O&p", PyUnicode_FSConverter, &path, &follow))
        return NULL;
    dir_entry_t *entries = NULL;
    size_t n = 0;
    int err;
    Py_BEGIN_ALLOW_THREADS;
    err = list_dir(PyBytes_AS_STRING(path), follow, &entries, &n);
    Py_END_ALLOW_THREADS;
    PyObject *results = NULL;
    if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
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

static PyMethodDef methods[] = {
    {"content_ids", content_ids, METH_VARARGS, content_ids_doc},
    {"scan_dir", scan_dir, METH_VARARGS, scan_dir_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastscan",
    "List directories and compute content ids in one call, without the GIL.", -1, methods,
};

PyMODINIT_FUNC PyInit__fastscan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "API", FS_API) < 0 ||
        PyModule_AddIntConstant(m, "CONTENT_ID_SMALL_LIMIT", CONTENT_ID_SMALL_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "CONTENT_ID_BLOCK", CONTENT_ID_BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "CONTENT_ID_SAMPLES", CONTENT_ID_SAMPLES) < 0 ||
        PyModule_AddIntConstant(m, "CONTENT_ID_ALIGN", CONTENT_ID_ALIGN) < 0 ||
        PyModule_AddIntConstant(m, "NOT_REGULAR", FS_NOT_REGULAR) < 0 ||
        PyModule_AddIntConstant(m, "CHANGED", FS_CHANGED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
