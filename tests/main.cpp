// The doctest runner linked into every test executable; the tests themselves (and their CHECKs)
// are in tests/test_*.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
