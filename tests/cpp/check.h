// A minimal test harness: CHECK records a failure and continues; main() returns the failure count.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace s2test {

inline int& failures() {
  static int n = 0;
  return n;
}
inline std::vector<std::pair<std::string, std::function<void()>>>& registry() {
  static std::vector<std::pair<std::string, std::function<void()>>> r;
  return r;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { registry().emplace_back(name, std::move(fn)); }
};
inline int run_all() {
  for (auto& [name, fn] : registry()) {
    const int before = failures();
    fn();
    std::printf("[%s] %s\n", failures() == before ? " ok " : "FAIL", name.c_str());
  }
  std::printf("%zu tests, %d failed checks\n", registry().size(), failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace s2test

#define S2_TEST(name)                                               \
  static void name();                                               \
  static ::s2test::Register name##_registration(#name, name);       \
  static void name()

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ++::s2test::failures();                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                            \
  } while (0)

#define CHECK_MSG(cond, ...)                                                     \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ++::s2test::failures();                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                         \
      std::fprintf(stderr, "\n");                                                \
    }                                                                            \
  } while (0)

// Expects `stmt` to throw exception type E.
#define CHECK_THROWS(E, stmt)                                                    \
  do {                                                                           \
    bool thrown_ = false;                                                        \
    try {                                                                        \
      stmt;                                                                      \
    } catch (const E&) {                                                         \
      thrown_ = true;                                                            \
    } catch (...) {                                                              \
    }                                                                            \
    CHECK_MSG(thrown_, "expected %s from %s", #E, #stmt);                        \
  } while (0)

#define S2_TEST_MAIN() \
  int main() { return ::s2test::run_all(); }
