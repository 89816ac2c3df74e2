// Catch2 2 needs a translation unit that defines main; Catch2 3 links Catch2WithMain instead.
#if EAGLET_CATCH2_MAJOR < 3
#define CATCH_CONFIG_MAIN
#include "catch.h"
#endif
