#include <doctest/doctest.h>
#include "core/ops.h"
using namespace liandan;
TEST_CASE("smoke") { CHECK(add(ones({2}), ones({2})).at({1}) == 2.0); }
