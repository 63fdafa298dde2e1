/* fl_status.c - static messages for every fl_status. */
#include "fastlstm.h"

const char *fl_version(void) {
    return FL_VERSION;
}

const char *fl_status_message(fl_status status) {
    switch (status) {
    case FL_OK:
        return "ok";
    case FL_ERR_ARG:
        return "invalid argument (NULL pointer or option out of range)";
    case FL_ERR_SHAPE:
        return "invalid or inconsistent sizes";
    case FL_ERR_NOMEM:
        return "out of memory";
    case FL_ERR_NONFINITE:
        return "NaN or infinity found";
    case FL_ERR_UNSUPPORTED:
        return "unsupported activation or option";
    case FL_ERR_OVERFLOW:
        return "sizes too large: their product overflows";
    }
    return "unknown status";
}
