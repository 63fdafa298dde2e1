# cython: boundscheck=True, wraparound=False, initializedcheck=True
"""The nesting depth of JSON text, compiled: one pass over the bytes with
the string and escape states, before json.loads builds anything."""

from libc.stdint cimport uint8_t


def json_depth(const uint8_t[::1] raw):
    """The deepest nesting of [ and { in ``raw``, brackets inside strings
    skipped. Malformed text gives some depth; json.loads judges the rest."""
    cdef Py_ssize_t n = raw.shape[0], i
    cdef const uint8_t *p = &raw[0] if n else NULL
    cdef long depth = 0, deepest = 0
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
                if depth > deepest:
                    deepest = depth
            elif c == 0x5D or c == 0x7D:  # ] }
                depth -= 1
    return deepest
