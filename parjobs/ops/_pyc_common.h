/*
 * What parjobs' two C extensions (_fastcopy.c, _fastscan.c) share: reading a file at an
 * offset whatever the kernel's short reads and interruptions, a PyMem array of a list's
 * items, and the module's creation with its table of int constants. Each extension includes
 * it after <Python.h>, <errno.h> and <unistd.h>; everything here is static inline (each
 * extension gets its own copy, and no warning for what one of them does not use).
 */
#ifndef PARJOBS_PYC_COMMON_H
#define PARJOBS_PYC_COMMON_H

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Up to want bytes of fd from pos into buf (fewer only at its end), or -errno. */
static inline ssize_t read_full(int fd, void *buf, size_t want, long long pos) {
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, (char *)buf + got, want - got, pos + (long long)got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* A zeroed array of n items of size bytes for a list's items (at least one item, so that
 * NULL always means no memory: the caller raises MemoryError); free with PyMem_Free. */
static inline void *items_array(Py_ssize_t n, size_t size) {
    return PyMem_Calloc(n > 0 ? (size_t)n : 1, size);
}

/* An int constant the module exports: the Python code checks a build against its own. */
typedef struct {
    const char *name;
    long value;
} int_constant_t;

/* The module of def with its int constants, or NULL with the error set. */
static inline PyObject *create_module(struct PyModuleDef *def, const int_constant_t *constants,
                                      size_t n) {
    PyObject *m = PyModule_Create(def);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}

#endif
