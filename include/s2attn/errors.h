// Typed errors. Every invalid argument raises InvalidArgument naming the argument and the expectation;
// a kernel variant that is not built raises Unsupported; a failing CUDA call raises DeviceError.
#pragma once
#include <stdexcept>
#include <string>

namespace s2attn {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller error: `argument()` is the name of the offending argument (e.g. "q", "pattern.vert_stride").
class InvalidArgument : public Error {
 public:
  InvalidArgument(std::string argument, const std::string& expectation)
      : Error("invalid argument '" + argument + "': " + expectation), argument_(std::move(argument)) {}
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string argument_;
};

// A dtype the op does not accept for this argument (a kind of InvalidArgument, so it can be caught as one).
class DTypeMismatch : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// A valid request this build cannot serve (backend or kernel variant not compiled in).
class Unsupported : public Error {
 public:
  using Error::Error;
};

// A failure reported by the device runtime.
class DeviceError : public Error {
 public:
  using Error::Error;
};

}  // namespace s2attn
