// The C++ tests' check of the API's typed errors: a call that must raise InvalidArgument naming an argument.
#pragma once
#include <string>

#include "check.h"
#include "s2attn/errors.h"

namespace s2test {

// Runs `fn`, expects s2attn::InvalidArgument (or a subclass) naming `argument`.
template <typename Fn>
void expect_invalid(const std::string& argument, Fn fn) {
  try {
    fn();
    CHECK_MSG(false, "no error for argument '%s'", argument.c_str());
  } catch (const s2attn::InvalidArgument& e) {
    CHECK_MSG(e.argument() == argument, "argument '%s' expected, error says '%s' (%s)", argument.c_str(),
              e.argument().c_str(), e.what());
  }
}

}  // namespace s2test
