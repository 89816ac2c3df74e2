// The `mooncake` store backend: Mooncake's Python client driven by an embedded CPython.
// Owns: finding a Python that can import mooncake.store (a probe run in a child process, so a
// broken install fails with a message instead of a crash), loading its libpython with dlopen and
// calling it through the stable C ABI (no Python headers at build time), the master reachability
// check, and the mapping of Mooncake's return codes onto the Store contract.
#include "data/mooncake_store.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>

#include "core/error.h"

extern char** environ;

namespace eaglet::data {
namespace {

namespace fs = std::filesystem;

// --- the Python C API, resolved with dlsym from the chosen libpython ----------------------------
// Only functions of CPython's stable ABI (3.10+), so one eaglet binary works with any Python the
// Mooncake wheels exist for (3.10-3.13).
struct PyObj;  // opaque PyObject
using Obj = PyObj*;

struct PyApi {
  void (*Py_InitializeEx)(int);
  int (*Py_IsInitialized)();
  void* (*PyEval_SaveThread)();
  int (*PyGILState_Ensure)();
  void (*PyGILState_Release)(int);
  Obj (*PyImport_ImportModule)(const char*);
  Obj (*PyObject_GetAttrString)(Obj, const char*);
  int (*PyObject_SetAttrString)(Obj, const char*, Obj);
  Obj (*PyObject_CallObject)(Obj, Obj);
  Obj (*PyObject_Str)(Obj);
  Obj (*PyTuple_New)(ssize_t);
  int (*PyTuple_SetItem)(Obj, ssize_t, Obj);
  Obj (*PyList_New)(ssize_t);
  int (*PyList_SetItem)(Obj, ssize_t, Obj);
  ssize_t (*PyList_Size)(Obj);
  Obj (*PyList_GetItem)(Obj, ssize_t);
  Obj (*PyLong_FromLongLong)(long long);
  Obj (*PyLong_FromUnsignedLongLong)(unsigned long long);
  long long (*PyLong_AsLongLong)(Obj);
  Obj (*PyBool_FromLong)(long);
  Obj (*PyUnicode_FromStringAndSize)(const char*, ssize_t);
  const char* (*PyUnicode_AsUTF8AndSize)(Obj, ssize_t*);
  Obj (*PyErr_Occurred)();
  void (*PyErr_Fetch)(Obj*, Obj*, Obj*);
  void (*PyErr_NormalizeException)(Obj*, Obj*, Obj*);
  void (*Py_DecRef)(Obj);
};
PyApi g_py{};

// Owns one reference; destroy it only while holding the GIL.
class Ref {
 public:
  Ref() = default;
  explicit Ref(Obj o) : o_(o) {}
  Ref(Ref&& r) noexcept : o_(std::exchange(r.o_, nullptr)) {}
  Ref& operator=(Ref&& r) noexcept {
    if (this != &r) {
      reset();
      o_ = std::exchange(r.o_, nullptr);
    }
    return *this;
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  ~Ref() { reset(); }
  void reset() {
    if (o_ != nullptr) g_py.Py_DecRef(o_);
    o_ = nullptr;
  }
  Obj get() const { return o_; }
  Obj release() { return std::exchange(o_, nullptr); }
  explicit operator bool() const { return o_ != nullptr; }

 private:
  Obj o_ = nullptr;
};

// Holds the GIL for its scope (any thread).
class Gil {
 public:
  Gil() : state_(g_py.PyGILState_Ensure()) {}
  ~Gil() { g_py.PyGILState_Release(state_); }
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;

 private:
  int state_;
};

std::string to_text(Obj o) {
  if (o == nullptr) return "";
  Ref s(g_py.PyObject_Str(o));
  if (!s) return "?";
  ssize_t n = 0;
  const char* p = g_py.PyUnicode_AsUTF8AndSize(s.get(), &n);
  return p != nullptr ? std::string(p, static_cast<size_t>(n)) : "?";
}

// Takes the pending Python exception as "TypeName: message".
std::string take_python_error() {
  Obj t = nullptr, v = nullptr, tb = nullptr;
  g_py.PyErr_Fetch(&t, &v, &tb);
  if (t == nullptr) return "no Python exception set";
  g_py.PyErr_NormalizeException(&t, &v, &tb);
  Ref type(t), value(v), trace(tb);
  Ref name(g_py.PyObject_GetAttrString(type.get(), "__name__"));
  std::string text = name ? to_text(name.get()) : "exception";
  std::string msg = to_text(value.get());
  return msg.empty() ? text : text + ": " + msg;
}

Ref checked(Obj o, const std::string& what) {
  if (o == nullptr) EAGLET_FAIL("mooncake: {} failed in Python: {}", what, take_python_error());
  return Ref(o);
}

Ref py_str(const std::string& s) {
  return checked(g_py.PyUnicode_FromStringAndSize(s.data(), static_cast<ssize_t>(s.size())),
                 "str()");
}
Ref py_int(long long v) {
  return checked(g_py.PyLong_FromLongLong(v), "int()");
}
Ref py_ptr(const void* p) {
  return checked(g_py.PyLong_FromUnsignedLongLong(reinterpret_cast<uintptr_t>(p)), "int(ptr)");
}
Ref py_list(std::vector<Ref> items) {
  Ref list = checked(g_py.PyList_New(static_cast<ssize_t>(items.size())), "list()");
  for (size_t i = 0; i < items.size(); ++i)
    g_py.PyList_SetItem(list.get(), static_cast<ssize_t>(i), items[i].release());  // steals
  return list;
}
long long to_int(Obj o, const std::string& what) {
  long long v = g_py.PyLong_AsLongLong(o);
  if (v == -1 && g_py.PyErr_Occurred() != nullptr)
    EAGLET_FAIL("mooncake: {} returned a non-integer: {}", what, take_python_error());
  return v;
}

// obj.method(*args); `what` names the call in errors (with the key where there is one).
Ref call(Obj obj, const char* method, std::vector<Ref> args, const std::string& what) {
  Ref fn = checked(g_py.PyObject_GetAttrString(obj, method), what);
  Ref tuple = checked(g_py.PyTuple_New(static_cast<ssize_t>(args.size())), what);
  for (size_t i = 0; i < args.size(); ++i)
    g_py.PyTuple_SetItem(tuple.get(), static_cast<ssize_t>(i), args[i].release());  // steals
  return checked(g_py.PyObject_CallObject(fn.get(), tuple.get()), what);
}

// --- Mooncake's return codes (mooncake-store/include/types.h, ErrorCode) ------------------------
constexpr long long kMcInvalidParams = -600;
constexpr long long kMcNotFound = -704;

const char* mooncake_code_name(long long code) {
  static const std::pair<long long, const char*> kNames[] = {
      {-1, "INTERNAL_ERROR"},
      {-10, "BUFFER_OVERFLOW"},
      {-101, "SEGMENT_NOT_FOUND"},
      {-103, "CLIENT_NOT_FOUND"},
      {-200,
       "NO_AVAILABLE_HANDLE: no space left in the store's segments; lend more memory "
       "(data.mooncake_segment_size, a mooncake_client) or consume samples sooner"},
      {-400, "INVALID_KEY"},
      {-500, "WRITE_FAIL"},
      {-600, "INVALID_PARAMS"},
      {-601, "ILLEGAL_CLIENT"},
      {-700, "INVALID_WRITE"},
      {-701, "INVALID_READ"},
      {-703, "REPLICA_IS_NOT_READY"},
      {-704, "OBJECT_NOT_FOUND"},
      {-705, "OBJECT_ALREADY_EXISTS"},
      {-706, "OBJECT_HAS_LEASE"},
      {-707, "LEASE_EXPIRED: the read took longer than the master's default_kv_lease_ttl"},
      {-712, "REPLICA_IS_GONE"},
      {-800,
       "TRANSFER_FAIL: the data transfer failed (is the segment owner still running? "
       "loopback runs need MC_TCP_BIND_ADDRESS=127.0.0.1)"},
      {-900, "RPC_FAIL: the master did not answer"},
      {-1010, "UNAVAILABLE_IN_CURRENT_STATUS"},
  };
  for (const auto& [c, name] : kNames)
    if (c == code) return name;
  return "see ErrorCode in Mooncake's mooncake-store/include/types.h";
}

// Codes that say the store cannot be reached (the master, or the segment owner through the
// transfer engine), not that the object is absent or bad: retried, then a StoreUnavailable.
// Measured with mooncake-transfer-engine-non-cuda 0.3.13 on loopback: after a SIGKILL of
// mooncake_master every call returns -900 RPC_FAIL, the first at once, later ones after the
// client's ~4.3 s of reconnect attempts; a missing object stays -704 OBJECT_NOT_FOUND.
bool is_outage(long long code) {
  return code == -900 || code == -800 || code == -101 || code == -103 || code == -1010;
}
long long outage_of(long long code) {
  return is_outage(code) ? code : 0;
}
long long outage_of(const std::vector<long long>& codes) {
  for (long long c : codes)
    if (is_outage(c)) return c;
  return 0;
}
// Retries of an outage stop once this much time has passed since its first failure (a few
// seconds: a master restart under a supervisor, a dropped connection; longer is an outage that
// needs a person, and a hang would be worse).
constexpr std::chrono::milliseconds kOutageBudget{4000};

// --- child processes with a time limit -----------------------------------------------------------
struct Captured {
  std::string spawn_error;  // non-empty when it could not be started
  bool timed_out = false;
  int status = 0;      // waitpid status
  std::string output;  // stdout and stderr together
};

Captured run_captured(const std::vector<std::string>& argv, int timeout_s) {
  Captured r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    r.spawn_error = fmt::format("pipe: {}", std::strerror(errno));
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    r.spawn_error = std::strerror(rc);
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      r.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;  // timeout is handled at the top of the loop
    ssize_t got = read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    r.output.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

std::string tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// --- choosing the Python ----------------------------------------------------------------------
// Run by each candidate interpreter in a child process: where its libpython and sys.path are,
// and whether mooncake.store imports (which loads store.so and its system libraries).
constexpr const char* kProbe = R"PY(
import json, sys, sysconfig
v = sysconfig.get_config_var
r = {"executable": sys.executable, "version": "%d.%d.%d" % sys.version_info[:3],
     "base_prefix": sys.base_prefix, "path": [p for p in sys.path if p],
     "libdir": v("LIBDIR") or "", "instsoname": v("INSTSONAME") or "",
     "ldlibrary": v("LDLIBRARY") or "", "shared": int(v("Py_ENABLE_SHARED") or 0)}
try:
    import mooncake.store
    from importlib import metadata
    dist = ""
    for d in ("mooncake-transfer-engine-non-cuda", "mooncake-transfer-engine",
              "mooncake-transfer-engine-cuda13"):
        try:
            dist = "%s %s" % (d, metadata.version(d))
            break
        except metadata.PackageNotFoundError:
            pass
    r["mooncake"] = dist or "mooncake (version unknown)"
except BaseException as e:
    r["error"] = "%s: %s" % (type(e).__name__, e)
print("EAGLET_PROBE " + json.dumps(r))
)PY";

// The Python whose PyTorch provides the LibTorch this process runs: found from the loaded
// .../site-packages/torch/lib/libc10.so, three folders up is the environment's prefix.
std::optional<std::string> torch_python() {
  std::string c10;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        const char* name = info->dlpi_name;
        if (name != nullptr && std::strstr(name, "/torch/lib/libc10.so") != nullptr) {
          *static_cast<std::string*>(out) = name;
          return 1;
        }
        return 0;
      },
      &c10);
  if (c10.empty()) return std::nullopt;
  // .../<prefix>/lib/pythonX.Y/site-packages/torch/lib/libc10.so
  fs::path site = fs::path(c10).parent_path().parent_path().parent_path();
  fs::path version_dir = site.parent_path();  // pythonX.Y
  fs::path prefix = version_dir.parent_path().parent_path();
  for (const auto& name : {version_dir.filename().string(), std::string("python3")}) {
    fs::path exe = prefix / "bin" / name;
    if (access(exe.c_str(), X_OK) == 0) return exe.string();
  }
  return std::nullopt;
}

struct PythonInfo {
  std::string python;   // what was run
  nlohmann::json info;  // the probe's answer
};

// First candidate that imports mooncake.store; otherwise fails naming each candidate's problem.
PythonInfo choose_python() {
  std::vector<std::string> candidates;
  if (auto p = torch_python()) candidates.push_back(*p);
  candidates.push_back("python3");
  std::vector<std::string> problems;
  for (const auto& python : candidates) {
    Captured c = run_captured({python, "-c", kProbe}, 120);
    if (!c.spawn_error.empty()) {
      problems.push_back(fmt::format("{}: cannot run it ({})", python, c.spawn_error));
      continue;
    }
    if (c.timed_out) {
      problems.push_back(fmt::format("{}: the probe did not finish within 120 s", python));
      continue;
    }
    auto at = c.output.rfind("EAGLET_PROBE ");
    if (at == std::string::npos) {
      problems.push_back(fmt::format("{}: the probe failed (status {}): {}", python, c.status,
                                     tail(c.output, 400)));
      continue;
    }
    nlohmann::json info;
    try {
      std::string line = c.output.substr(at + 13);
      info = nlohmann::json::parse(line.substr(0, line.find('\n')));
    } catch (const std::exception& e) {
      problems.push_back(fmt::format("{}: unreadable probe answer ({})", python, e.what()));
      continue;
    }
    if (info.contains("error")) {
      problems.push_back(fmt::format("{} (Python {}) cannot import mooncake.store: {}", python,
                                     info.value("version", "?"), info["error"].get<std::string>()));
      continue;
    }
    return {python, std::move(info)};
  }
  std::string list;
  for (const auto& p : problems) list += "\n  " + p;
  EAGLET_FAIL(
      "data.store=mooncake: no Python with Mooncake's client found:{}\nInstall the wheel into "
      "the Python eaglet was built with (scripts/setup.sh does: pip install "
      "mooncake-transfer-engine-non-cuda), and the system libraries it loads (libibverbs1 "
      "libnuma1 libcurl4); docs/MOONCAKE.md",
      list);
}

// The shared libpython of the chosen Python.
std::string load_libpython(const PythonInfo& p) {
  const auto& info = p.info;
  std::string libdir = info.value("libdir", ""), soname = info.value("instsoname", ""),
              ldlib = info.value("ldlibrary", "");
  std::vector<std::string> tries;
  for (const auto& name : {soname, ldlib}) {
    if (name.empty() || name.ends_with(".a")) continue;
    if (!libdir.empty()) tries.push_back((fs::path(libdir) / name).string());
    tries.push_back(name);  // the loader's search path
  }
  std::string errors;
  for (const auto& lib : tries) {
    if (dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) return lib;
    const char* e = dlerror();
    errors += fmt::format("\n  {}: {}", lib, e != nullptr ? e : "?");
  }
  EAGLET_FAIL(
      "data.store=mooncake: {} (Python {}) has no loadable shared libpython (Py_ENABLE_SHARED={}, "
      "LIBDIR={}), needed to embed it:{}\nUse a Python built with --enable-shared (pyenv: "
      "PYTHON_CONFIGURE_OPTS=--enable-shared; Debian: apt-get install libpython3.X); "
      "docs/MOONCAKE.md",
      p.python, info.value("version", "?"), info.value("shared", 0), libdir,
      errors.empty() ? std::string("\n  (no library name known)") : errors);
}

void resolve_api(void* lib, const std::string& libname) {
  struct Entry {
    const char* name;
    void** slot;
  };
#define EAGLET_PY(fn)                         \
  Entry {                                     \
#fn, reinterpret_cast < void**>(&g_py.fn) \
  }
  const Entry table[] = {
      EAGLET_PY(Py_InitializeEx),
      EAGLET_PY(Py_IsInitialized),
      EAGLET_PY(PyEval_SaveThread),
      EAGLET_PY(PyGILState_Ensure),
      EAGLET_PY(PyGILState_Release),
      EAGLET_PY(PyImport_ImportModule),
      EAGLET_PY(PyObject_GetAttrString),
      EAGLET_PY(PyObject_SetAttrString),
      EAGLET_PY(PyObject_CallObject),
      EAGLET_PY(PyObject_Str),
      EAGLET_PY(PyTuple_New),
      EAGLET_PY(PyTuple_SetItem),
      EAGLET_PY(PyList_New),
      EAGLET_PY(PyList_SetItem),
      EAGLET_PY(PyList_Size),
      EAGLET_PY(PyList_GetItem),
      EAGLET_PY(PyLong_FromLongLong),
      EAGLET_PY(PyLong_FromUnsignedLongLong),
      EAGLET_PY(PyLong_AsLongLong),
      EAGLET_PY(PyBool_FromLong),
      EAGLET_PY(PyUnicode_FromStringAndSize),
      EAGLET_PY(PyUnicode_AsUTF8AndSize),
      EAGLET_PY(PyErr_Occurred),
      EAGLET_PY(PyErr_Fetch),
      EAGLET_PY(PyErr_NormalizeException),
      EAGLET_PY(Py_DecRef),
  };
#undef EAGLET_PY
  for (const auto& e : table) {
    *e.slot = dlsym(lib, e.name);
    EAGLET_CHECK(*e.slot != nullptr, "data.store=mooncake: {} lacks the Python function {}",
                 libname, e.name);
  }
}

// The embedded interpreter with mooncake.store imported; set up once per process.
struct Interpreter {
  std::string python, version, libpython, mooncake;
  Obj store_class = nullptr;  // mooncake.store.MooncakeDistributedStore, kept for the process
};

Interpreter start_interpreter() {
  PythonInfo p = choose_python();
  Interpreter in;
  in.python = p.python;
  in.version = p.info.value("version", "?");
  in.mooncake = p.info.value("mooncake", "?");
  in.libpython = load_libpython(p);
  void* lib = dlopen(in.libpython.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  EAGLET_CHECK(lib != nullptr, "data.store=mooncake: {} vanished after loading", in.libpython);
  resolve_api(lib, in.libpython);

  bool ours = g_py.Py_IsInitialized() == 0;
  if (ours) {
    // The standard library of exactly this Python (not whatever python3 is first on PATH), no
    // signal handlers (SIGINT/SIGTERM stay eaglet's). PYTHONHOME is only needed while starting.
    setenv("PYTHONHOME", p.info.value("base_prefix", "").c_str(), 1);
    g_py.Py_InitializeEx(0);
    unsetenv("PYTHONHOME");
    EAGLET_CHECK(g_py.Py_IsInitialized() != 0, "data.store=mooncake: {} failed to start",
                 in.libpython);
  }
  {
    Gil gil;  // Refs below are released before the GIL is
    // The probe's sys.path: the virtual environment's site-packages with the wheel.
    Ref sys = checked(g_py.PyImport_ImportModule("sys"), "import sys");
    std::vector<Ref> path;
    for (const auto& dir : p.info["path"]) path.push_back(py_str(dir.get<std::string>()));
    if (g_py.PyObject_SetAttrString(sys.get(), "path", py_list(std::move(path)).get()) != 0)
      EAGLET_FAIL("mooncake: setting sys.path failed: {}", take_python_error());
    std::vector<Ref> argv;
    argv.push_back(py_str("eaglet"));
    if (g_py.PyObject_SetAttrString(sys.get(), "argv", py_list(std::move(argv)).get()) != 0)
      EAGLET_FAIL("mooncake: setting sys.argv failed: {}", take_python_error());
    // Mooncake's own log level (read when store.so loads): its warnings and errors only, unless
    // the user set MC_LOG_LEVEL (INFO prints a dozen lines per client and rank).
    setenv("MC_LOG_LEVEL", "WARNING", 0);
    Obj module = g_py.PyImport_ImportModule("mooncake.store");
    if (module == nullptr)
      EAGLET_FAIL("data.store=mooncake: {} (Python {}): import mooncake.store failed in eaglet: {}",
                  in.python, in.version, take_python_error());
    Ref mod(module);
    in.store_class = checked(g_py.PyObject_GetAttrString(mod.get(), "MooncakeDistributedStore"),
                             "mooncake.store.MooncakeDistributedStore")
                         .release();
  }
  // Py_InitializeEx left this thread holding the GIL (the Gil above only nested on it): hand it
  // over once, so that any thread can take it for a call.
  if (ours) g_py.PyEval_SaveThread();
  return in;
}

const Interpreter& interpreter() {
  static std::mutex mu;
  static std::optional<Interpreter> done;
  static std::optional<Error> failed;
  std::lock_guard lock(mu);
  if (done) return *done;
  if (failed) throw *failed;  // the same message on every later open
  try {
    done = start_interpreter();
  } catch (const Error& e) {
    failed = e;
    throw;
  }
  return *done;
}

// --- reachability of the master and metadata server --------------------------------------------
struct Endpoint {
  std::string host, port;
};

// "host:port" or "[v6]:port".
std::optional<Endpoint> split_host_port(const std::string& s) {
  if (s.starts_with("[")) {
    auto close = s.find("]:");
    if (close == std::string::npos) return std::nullopt;
    return Endpoint{s.substr(1, close - 1), s.substr(close + 2)};
  }
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return std::nullopt;
  return Endpoint{s.substr(0, colon), s.substr(colon + 1)};
}

// The TCP endpoint behind a metadata connection string; none for P2PHANDSHAKE.
std::optional<Endpoint> metadata_endpoint(const std::string& url) {
  if (url == "P2PHANDSHAKE" || url.empty()) return std::nullopt;
  std::string rest = url, default_port;
  for (const auto& [scheme, port] : {std::pair{"http://", "80"}, std::pair{"https://", "443"},
                                     std::pair{"etcd://", "2379"}, std::pair{"redis://", "6379"}}) {
    if (url.starts_with(scheme)) {
      rest = url.substr(std::strlen(scheme));
      default_port = port;
    }
  }
  rest = rest.substr(0, rest.find_first_of("/,;"));  // first etcd endpoint, no path
  if (auto at = rest.rfind('@'); at != std::string::npos) rest = rest.substr(at + 1);
  if (auto e = split_host_port(rest)) return e;
  if (!default_port.empty() && !rest.empty()) return Endpoint{rest, default_port};
  return std::nullopt;
}

// "" when host:port accepts a TCP connection within `timeout_ms`, else what went wrong.
std::string try_connect(const Endpoint& ep, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(ep.host.c_str(), ep.port.c_str(), &hints, &found); rc != 0)
    return fmt::format("cannot resolve {}: {}", ep.host, gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int rc = connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = poll(&p, 1, timeout_ms);
      if (rc == 0) {
        why = fmt::format("no answer within {} ms", timeout_ms);
        rc = -1;
      } else if (rc > 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        if (err != 0) why = std::strerror(err);
      } else {
        why = std::strerror(errno);
      }
    } else if (rc != 0) {
      why = std::strerror(errno);
    }
    close(fd);
    if (rc == 0) {
      freeaddrinfo(found);
      return "";
    }
  }
  freeaddrinfo(found);
  return why;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1";
}

void check_reachable(const DataConfig& cfg) {
  constexpr int kTimeoutMs = 5000;
  auto master = split_host_port(cfg.mooncake_master);
  EAGLET_CHECK(master.has_value(), "data.mooncake_master={}: expected host:port",
               cfg.mooncake_master);
  std::string why = try_connect(*master, kTimeoutMs);
  EAGLET_CHECK(why.empty(),
               "data.mooncake_master={}: cannot reach the Mooncake master ({}); start it "
               "(scripts/mooncake_master.sh start) or fix the address",
               cfg.mooncake_master, why);
  if (auto meta = metadata_endpoint(cfg.mooncake_metadata)) {
    why = try_connect(*meta, kTimeoutMs);
    EAGLET_CHECK(why.empty(),
                 "data.mooncake_metadata={}: cannot reach the metadata server at {}:{} ({}); the "
                 "master serves it with --enable_http_metadata_server (scripts/mooncake_master.sh "
                 "does), or use P2PHANDSHAKE",
                 cfg.mooncake_metadata, meta->host, meta->port, why);
  }
}

// --- the store -----------------------------------------------------------------------------
struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

class MooncakeStore final : public Store {
 public:
  explicit MooncakeStore(const DataConfig& cfg)
      : master_(cfg.mooncake_master), tcp_(cfg.mooncake_protocol == "tcp") {
    check_reachable(cfg);
    const Interpreter& in = interpreter();
    // The loopback trap: with an HTTP metadata server the transfer engine otherwise advertises
    // the host's first non-lo address and peers send data there.
    if (is_loopback(cfg.mooncake_local_hostname))
      setenv("MC_TCP_BIND_ADDRESS", cfg.mooncake_local_hostname.c_str(), 0);
    Gil gil;
    client_ =
        checked(g_py.PyObject_CallObject(in.store_class, nullptr), "MooncakeDistributedStore()");
    std::vector<Ref> args;
    args.push_back(py_str(cfg.mooncake_local_hostname));
    args.push_back(py_str(cfg.mooncake_metadata));
    args.push_back(py_int(cfg.mooncake_segment_size));
    args.push_back(py_int(cfg.mooncake_buffer_size));
    args.push_back(py_str(cfg.mooncake_protocol));
    args.push_back(py_str(cfg.mooncake_device));
    args.push_back(py_str(cfg.mooncake_master));
    long long rc = to_int(call(client_.get(), "setup", std::move(args), "setup").get(), "setup");
    EAGLET_CHECK(rc == 0,
                 "mooncake: client setup failed (code {}) with master {}, metadata {}, protocol "
                 "{}, local hostname {}, segment {} B, buffer {} B; Mooncake's log above says why",
                 rc, cfg.mooncake_master, cfg.mooncake_metadata, cfg.mooncake_protocol,
                 cfg.mooncake_local_hostname, cfg.mooncake_segment_size, cfg.mooncake_buffer_size);
    spdlog::info("mooncake: client of master {} ({}, {}; Python {} at {}, {})", master_,
                 cfg.mooncake_protocol, cfg.mooncake_metadata, in.version, in.python, in.mooncake);
  }

  ~MooncakeStore() override {
    try {
      std::lock_guard lock(mu_);
      Gil gil;
      for (const auto& [begin, end] : registered_)
        call(client_.get(), "unregister_buffer", vec(py_ptr(reinterpret_cast<void*>(begin))),
             "unregister_buffer");
      registered_.clear();
      call(client_.get(), "close", {}, "close");
      client_.reset();
    } catch (const std::exception& e) {
      spdlog::warn("mooncake: closing the client (master {}): {}", master_, e.what());
    }
  }

  const char* backend() const override { return "mooncake"; }

  int64_t size(const std::string& key) override {
    check_key(key);
    Gil gil;
    long long n = get_size_locked(key);
    if (n >= 0) return n;
    if (n == kMcNotFound) return kMissing;
    fail("get_size", key, n);
  }

  std::vector<int64_t> batch_get_into(const std::vector<std::string>& keys,
                                      const std::vector<void*>& buffers,
                                      const std::vector<int64_t>& capacities) override {
    EAGLET_CHECK(keys.size() == buffers.size() && keys.size() == capacities.size(),
                 "mooncake: batch_get_into got {} keys, {} buffers and {} capacities", keys.size(),
                 buffers.size(), capacities.size());
    if (keys.empty()) return {};
    for (const auto& k : keys) check_key(k);
    std::lock_guard lock(mu_);  // always before the GIL (see mu_)
    Gil gil;
    // Where each object lands: the caller's buffer, or (rdma, unregistered) the staging buffer.
    std::vector<char*> targets(keys.size());
    int64_t staged = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      EAGLET_CHECK(capacities[i] >= 0, "mooncake: key {}: negative capacity {}", keys[i],
                   capacities[i]);
      if (!direct(buffers[i], capacities[i])) staged += round_up(capacities[i]);
    }
    ensure_staging(staged);
    int64_t offset = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (direct(buffers[i], capacities[i])) {
        targets[i] = static_cast<char*>(buffers[i]);
      } else {
        targets[i] = staging_.get() + offset;
        offset += round_up(capacities[i]);
      }
    }
    std::string label = what("batch_get_into", keys.front()) +
                        (keys.size() > 1 ? fmt::format(" and {} more", keys.size() - 1) : "");
    const std::vector<long long> codes = retrying("batch_get_into", keys.front(), [&] {
      std::vector<Ref> k, p, n;
      for (size_t i = 0; i < keys.size(); ++i) {
        k.push_back(py_str(keys[i]));
        p.push_back(py_ptr(targets[i]));
        n.push_back(py_int(capacities[i]));
      }
      Ref out = call(client_.get(), "batch_get_into",
                     vec(py_list(std::move(k)), py_list(std::move(p)), py_list(std::move(n))),
                     label);
      EAGLET_CHECK(static_cast<size_t>(g_py.PyList_Size(out.get())) == keys.size(),
                   "mooncake: {} returned {} results for {} keys", label,
                   g_py.PyList_Size(out.get()), keys.size());
      std::vector<long long> c(keys.size());
      for (size_t i = 0; i < keys.size(); ++i)
        c[i] = to_int(g_py.PyList_GetItem(out.get(), static_cast<ssize_t>(i)), label);
      return c;
    });
    std::vector<int64_t> result(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      long long got = codes[i];
      if (got >= 0) {
        EAGLET_CHECK(got <= capacities[i],
                     "mooncake: key {}: read {} bytes into a buffer of {} (master {})", keys[i],
                     got, capacities[i], master_);
        if (targets[i] != buffers[i]) std::memcpy(buffers[i], targets[i], static_cast<size_t>(got));
        result[i] = got;
      } else if (got == kMcNotFound) {
        result[i] = kMissing;
      } else if (got == kMcInvalidParams) {
        // Mooncake answers "invalid parameters" for a buffer that is too small: tell that apart.
        long long sz = get_size_locked(keys[i]);
        if (sz == kMcNotFound)
          result[i] = kMissing;
        else if (sz > capacities[i])
          result[i] = kTooLarge;
        else
          fail("batch_get_into", keys[i], got);
      } else {
        fail("batch_get_into", keys[i], got);
      }
    }
    return result;
  }

  void put(const std::string& key, const void* data, int64_t bytes) override {
    check_key(key);
    EAGLET_CHECK(bytes > 0,
                 "mooncake: key {}: cannot store an empty object (Mooncake keeps no 0-byte values)",
                 key);
    std::lock_guard lock(mu_);  // always before the GIL (see mu_)
    Gil gil;
    const void* from = data;
    if (!direct(data, bytes)) {
      ensure_staging(round_up(bytes));
      std::memcpy(staging_.get(), data, static_cast<size_t>(bytes));
      from = staging_.get();
    }
    // upsert: a plain Mooncake put of an existing key returns 0 and keeps the old value.
    long long rc = retrying("put", key, [&] {
      return to_int(
          call(client_.get(), "upsert_from", vec(py_str(key), py_ptr(from), py_int(bytes)),
               what("upsert_from", key))
              .get(),
          what("upsert_from", key));
    });
    if (rc != 0) fail("put", key, rc);
  }

  void remove(const std::string& key) override {
    check_key(key);
    Gil gil;
    // force: our own read lease (default_kv_lease_ttl) would otherwise block consuming.
    long long rc = retrying("remove", key, [&] {
      Ref force(g_py.PyBool_FromLong(1));
      return to_int(
          call(client_.get(), "remove", vec(py_str(key), std::move(force)), what("remove", key))
              .get(),
          what("remove", key));
    });
    if (rc != 0 && rc != kMcNotFound) fail("remove", key, rc);
  }

  void register_buffer(void* ptr, int64_t bytes) override {
    EAGLET_CHECK(ptr != nullptr && bytes > 0, "mooncake: register_buffer({}, {}): empty buffer",
                 ptr, bytes);
    std::lock_guard lock(mu_);  // always before the GIL (see mu_)
    Gil gil;
    register_locked(ptr, bytes);
  }

 private:
  template <typename... R>
  static std::vector<Ref> vec(R&&... refs) {
    std::vector<Ref> v;
    (v.push_back(std::forward<R>(refs)), ...);
    return v;
  }
  std::string what(const char* op, const std::string& key) const {
    return fmt::format("{}('{}') (master {})", op, key, master_);
  }
  [[noreturn]] void fail(const char* op, const std::string& key, long long code) const {
    EAGLET_FAIL("mooncake: {} of key {} failed: code {} {} (master {})", op, key, code,
                mooncake_code_name(code), master_);
  }
  static int64_t round_up(int64_t n) { return (n + 4095) / 4096 * 4096; }

  // get_size with outage retries (caller holds the GIL).
  long long get_size_locked(const std::string& key) {
    return retrying("get_size", key, [&] {
      return to_int(call(client_.get(), "get_size", vec(py_str(key)), what("get_size", key)).get(),
                    what("get_size", key));
    });
  }

  // Runs `attempt` (one call into Mooncake, returning its code or codes) again while it reports an
  // outage (is_outage), with a short back-off, each retry logged; once kOutageBudget has passed
  // since the first failure, throws StoreUnavailable naming the master, the key and the rank.
  // Sleeps holding the GIL: only this store's calls use the interpreter.
  template <typename F>
  auto retrying(const char* op, const std::string& key, F attempt) -> decltype(attempt()) {
    using clock = std::chrono::steady_clock;
    const auto first = clock::now();
    auto backoff = std::chrono::milliseconds(200);
    for (int failures = 0;; ++failures) {
      auto r = attempt();
      const long long code = outage_of(r);
      if (code == 0) {
        if (failures > 0)
          spdlog::warn("mooncake: {} of key {} succeeded after {} retries (master {})", op, key,
                       failures, master_);
        return r;
      }
      const auto spent =
          std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - first);
      if (spent + backoff > kOutageBudget)
        throw StoreUnavailable(
            fmt::format("mooncake: store unavailable: {} of key {} failed with code {} {} on "
                        "rank {}, {} attempts over {:.1f} s; the Mooncake master {} (or the "
                        "process lending the store's memory) is down or unreachable. This is an "
                        "outage, not bad data, so data.on_error=skip does not apply: restart the "
                        "store and resume (--resume auto)",
                        op, key, code, mooncake_code_name(code), error_rank(), failures + 1,
                        spent.count() / 1000.0, master_),
            __FILE__, __LINE__);
      spdlog::warn("mooncake: {} of key {}: code {} {} (master {}); retrying in {} ms", op, key,
                   code, mooncake_code_name(code), master_, backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
  }

  // Whether Mooncake can move bytes straight to/from this memory (caller holds mu_).
  bool direct(const void* ptr, int64_t bytes) const {
    if (tcp_ || bytes == 0) return true;
    auto b = reinterpret_cast<uintptr_t>(ptr);
    for (const auto& [begin, end] : registered_)
      if (b >= begin && b + static_cast<uintptr_t>(bytes) <= end) return true;
    return false;
  }

  void register_locked(void* ptr, int64_t bytes) {
    auto b = reinterpret_cast<uintptr_t>(ptr), e = b + static_cast<uintptr_t>(bytes);
    for (const auto& [begin, end] : registered_) {
      if (b >= begin && e <= end) return;  // already registered: nothing to do
      EAGLET_CHECK(e <= begin || b >= end,
                   "mooncake: register_buffer of {} bytes at {} overlaps the registered buffer "
                   "[{:#x}, {:#x}) (Mooncake refuses overlapping regions; register one buffer "
                   "that covers both)",
                   bytes, ptr, begin, end);
    }
    long long rc = to_int(
        call(client_.get(), "register_buffer", vec(py_ptr(ptr), py_int(bytes)), "register_buffer")
            .get(),
        "register_buffer");
    EAGLET_CHECK(rc == 0,
                 "mooncake: register_buffer of {} bytes at {} failed: code {} {} (master {})",
                 bytes, ptr, rc, mooncake_code_name(rc), master_);
    registered_.emplace_back(b, e);
  }

  // A registered staging buffer of at least `bytes` (caller holds the GIL and mu_).
  void ensure_staging(int64_t bytes) {
    if (bytes <= staging_bytes_) return;
    if (staging_) {
      auto b = reinterpret_cast<uintptr_t>(staging_.get());
      std::erase_if(registered_, [b](const auto& r) { return r.first == b; });
      call(client_.get(), "unregister_buffer", vec(py_ptr(staging_.get())), "unregister_buffer");
      staging_.reset();
      staging_bytes_ = 0;
    }
    char* p = static_cast<char*>(std::aligned_alloc(4096, static_cast<size_t>(bytes)));
    EAGLET_CHECK(p != nullptr, "mooncake: cannot allocate a staging buffer of {} bytes", bytes);
    staging_.reset(p);
    register_locked(p, bytes);
    staging_bytes_ = bytes;
  }

  std::string master_;
  bool tcp_;  // tcp reads and writes any host memory; rdma needs registered memory
  Ref client_;
  // Guards registered_ and staging_ across a whole call. Taken before the GIL, never while
  // holding it: Mooncake drops the GIL during a transfer and takes it back after, so a thread
  // waiting for mu_ with the GIL held would deadlock with the one inside the transfer.
  std::mutex mu_;
  std::vector<std::pair<uintptr_t, uintptr_t>> registered_;
  std::unique_ptr<char, FreeDeleter> staging_;
  int64_t staging_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Store> open_mooncake_store(const DataConfig& cfg) {
  return std::make_unique<MooncakeStore>(cfg);
}

}  // namespace eaglet::data
