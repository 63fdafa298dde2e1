# cython: boundscheck=True, wraparound=False, initializedcheck=True
"""The nesting depth and container count of JSON text, compiled: one pass
over the bytes with the string and escape states, before json.loads builds
anything."""

from libc.stdint cimport uint8_t


def json_structure(const uint8_t[::1] raw):
    """(deepest nesting, number of arrays and objects) of the JSON text
    ``raw``, brackets inside strings skipped. Malformed text gives some
    figures; json.loads judges the rest."""
    cdef Py_ssize_t n = raw.shape[0], i
    cdef const uint8_t *p = &raw[0] if n else NULL
    cdef long depth = 0, deepest = 0, containers = 0
    cdef bint in_string = False, escaped = False
    cdef uint8_t c
    with nogil:
        for i in range(n):
            c = p[i]
            if in_string:
                if escaped:
                    escaped = False
                elif c == 0x5C:  # backslash
                    escaped = True
                elif c == 0x22:  # quote
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x5B or c == 0x7B:  # [ {
                depth += 1
                containers += 1
                if depth > deepest:
                    deepest = depth
            elif c == 0x5D or c == 0x7D:  # ] }
                depth -= 1
    return deepest, containers
