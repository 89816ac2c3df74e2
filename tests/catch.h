// Picks Catch2 2 (Debian 12) or 3 (the GPU image) so tests read the same on both.
#pragma once

#if EAGLET_CATCH2_MAJOR >= 3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
