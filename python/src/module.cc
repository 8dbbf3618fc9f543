// switchyard._C: the Python module over the C++ libraries (no second implementation).
//
// This file holds the module definition, the error translation, the comm bindings
// (Communicator, init, split, parallel groups, a few collectives on raw buffers) and the
// pipeline bindings (generate, verify, simulate, Executor with Python stage callbacks). The
// torch-tensor parts live in dispatch_bindings.cc, the only file that includes torch headers.
//
// Errors: a switchyard::Error crosses into Python as the class of switchyard.errors named
// after its code (InvalidArgument is a ValueError, Timeout a TimeoutError, ...), with
// str(exception) == the C++ what() and .code/.message/.rank attributes.
// GIL: released for every call that can block on peers; Executor callbacks take it back.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/executor.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/schedule_format.h"
#include "switchyard/pipeline/simulator.h"
#include "switchyard/pipeline/verifier.h"

namespace py = pybind11;

namespace switchyard::python {

void bind_dispatch(py::module_& m);

namespace {

// Raises the switchyard.errors class of e.code() with what() as the message.
void raise_switchyard_error(const Error& e) {
  const char* cls = "SwitchyardError";
  switch (e.code()) {
    case ErrorCode::kInvalidArgument: cls = "InvalidArgument"; break;
    case ErrorCode::kTimeout: cls = "Timeout"; break;
    case ErrorCode::kPeerFailure: cls = "PeerFailure"; break;
    case ErrorCode::kIo: cls = "IoError"; break;
    case ErrorCode::kUnsupported: cls = "Unsupported"; break;
    case ErrorCode::kInternal: cls = "InternalError"; break;
  }
  py::object type = py::module_::import("switchyard.errors").attr(cls);
  py::object exc = type(py::str(e.what()));
  exc.attr("code") = py::str(error_code_name(e.code()));
  exc.attr("message") = py::str(e.message());
  exc.attr("rank") = py::int_(e.rank());
  if (const auto* pf = dynamic_cast<const PeerFailure*>(&e)) exc.attr("peer") = py::int_(pf->peer());
  PyErr_SetObject(type.ptr(), exc.ptr());
}

comm::DataType parse_dtype(const std::string& name) {
  static const std::map<std::string, comm::DataType> kTypes = {
      {"int8", comm::DataType::kInt8},       {"uint8", comm::DataType::kUint8},
      {"int32", comm::DataType::kInt32},     {"int64", comm::DataType::kInt64},
      {"float32", comm::DataType::kFloat32}, {"float64", comm::DataType::kFloat64},
      {"bfloat16", comm::DataType::kBfloat16}};
  auto it = kTypes.find(name);
  if (it == kTypes.end()) SY_THROW(InvalidArgument, "unknown dtype '" << name << "' (int8, uint8, int32, int64, float32, float64, bfloat16)");
  return it->second;
}

comm::ReduceOp parse_op(const std::string& name) {
  if (name == "sum") return comm::ReduceOp::kSum;
  if (name == "max") return comm::ReduceOp::kMax;
  if (name == "min") return comm::ReduceOp::kMin;
  SY_THROW(InvalidArgument, "unknown reduce op '" << name << "' (sum, max, min)");
}

// Python holds buffers as (address, element count) pairs taken from tensor.data_ptr(); the
// wrapper in switchyard/__init__.py checks dtype and contiguity before calling these.
void* as_ptr(uintptr_t address) { return reinterpret_cast<void*>(address); }

py::dict sim_result_dict(const pipeline::SimResult& r) {
  py::dict d;
  d["makespan"] = r.makespan;
  d["busy"] = r.busy;
  d["bubble"] = r.bubble;
  d["max_bubble"] = r.max_bubble();
  d["mean_bubble"] = r.mean_bubble();
  d["peak_activations"] = r.peak_activations;
  d["parameter_copies"] = r.parameter_copies;
  return d;
}

// Wraps FP64 executor buffers as writable Python memoryviews (None for nullptr).
py::object f64_view(const double* p, size_t n) {
  if (p == nullptr) return py::none();
  return py::memoryview::from_buffer(const_cast<double*>(p), {static_cast<py::ssize_t>(n)},
                                     {static_cast<py::ssize_t>(sizeof(double))});
}

// Executor whose stage callbacks are Python callables. gradients: stage -> (address, numel)
// of an FP64 buffer the caller keeps alive for the Executor's lifetime.
std::unique_ptr<pipeline::Executor> make_executor(std::shared_ptr<comm::Communicator> comm,
                                                  const pipeline::Schedule& schedule, size_t activation_elems,
                                                  py::function forward, py::function backward_input,
                                                  py::function backward_weight,
                                                  std::map<int, std::pair<uintptr_t, size_t>> gradients) {
  pipeline::StageCallbacks cb;
  const size_t n = activation_elems;
  cb.forward = [forward, n](int stage, int mb, const double* in, double* out) {
    py::gil_scoped_acquire gil;
    forward(stage, mb, f64_view(in, n), f64_view(out, n));
  };
  cb.backward_input = [backward_input, n](int stage, int mb, const double* grad_out, double* grad_in) {
    py::gil_scoped_acquire gil;
    backward_input(stage, mb, f64_view(grad_out, n), f64_view(grad_in, n));
  };
  cb.backward_weight = [backward_weight](int stage, int mb) {
    py::gil_scoped_acquire gil;
    backward_weight(stage, mb);
  };
  cb.gradients = [gradients](int stage) -> std::span<double> {
    auto it = gradients.find(stage);
    if (it == gradients.end()) SY_THROW(InvalidArgument, "Executor: no gradient buffer given for stage " << stage);
    return {static_cast<double*>(as_ptr(it->second.first)), it->second.second};
  };
  py::gil_scoped_release nogil;  // collective construction
  return std::make_unique<pipeline::Executor>(std::move(comm), schedule, activation_elems, std::move(cb));
}

void bind_comm(py::module_& m) {
  using comm::Communicator;
  py::class_<Communicator, std::shared_ptr<Communicator>>(m, "Communicator")
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("node", &Communicator::node)
      .def_property_readonly("num_nodes", [](const Communicator& c) { return c.rank_map().num_nodes(); })
      .def_property_readonly("world_ranks", &Communicator::world_ranks)
      .def_property_readonly("timeout_s", [](const Communicator& c) { return c.timeout().count() / 1000.0; })
      .def("__repr__", &Communicator::describe)
      .def("split", [](Communicator& c, int color, int key) {
        py::gil_scoped_release nogil;
        return c.split(color, key);
      }, py::arg("color"), py::arg("key"))
      .def("barrier", [](Communicator& c) {
        py::gil_scoped_release nogil;
        c.barrier();
      })
      .def("abort", &Communicator::abort, py::arg("reason"))
      .def("_all_reduce", [](Communicator& c, uintptr_t buf, size_t count, const std::string& dtype,
                             const std::string& op) {
        comm::DataType t = parse_dtype(dtype);
        comm::ReduceOp o = parse_op(op);
        py::gil_scoped_release nogil;
        c.all_reduce(as_ptr(buf), as_ptr(buf), count, t, o);
      })
      .def("_all_to_all", [](Communicator& c, uintptr_t send, uintptr_t recv, size_t count_per_peer,
                             const std::string& dtype) {
        comm::DataType t = parse_dtype(dtype);
        py::gil_scoped_release nogil;
        c.all_to_all(as_ptr(send), as_ptr(recv), count_per_peer, t);
      })
      .def("_broadcast", [](Communicator& c, uintptr_t buf, size_t count, const std::string& dtype, int root) {
        comm::DataType t = parse_dtype(dtype);
        py::gil_scoped_release nogil;
        c.broadcast(as_ptr(buf), count, t, root);
      });

  m.def("init", [](double timeout_s) {
    comm::InitOptions o;
    o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    py::gil_scoped_release nogil;
    return Communicator::init(o);
  }, py::arg("timeout_s") = 60.0, "World communicator from the launcher environment (collective).");

  m.def("launch_env", [] {
    comm::LaunchEnv e = comm::LaunchEnv::detect();
    py::dict d;
    d["rank"] = e.rank;
    d["world_size"] = e.world_size;
    d["local_rank"] = e.local_rank;
    d["local_size"] = e.local_size;
    d["node"] = e.node;
    d["host"] = e.host;
    d["rendezvous"] = e.rendezvous;
    d["job_id"] = e.job_id;
    d["launcher"] = e.launcher;
    return d;
  }, "What the launcher environment says about this process (no communication).");

  m.def("make_parallel_groups", [](Communicator& world, int ep, int pp, int dp) {
    comm::ParallelGroups g;
    {
      py::gil_scoped_release nogil;
      g = comm::make_parallel_groups(world, ep, pp, dp);
    }
    return py::make_tuple(g.ep, g.pp, g.dp);
  }, py::arg("world"), py::arg("ep"), py::arg("pp"), py::arg("dp"));
}

void bind_pipeline(py::module_& m) {
  using pipeline::Schedule;
  py::class_<Schedule>(m, "Schedule")
      .def_readonly("name", &Schedule::name)
      .def_readonly("num_stages", &Schedule::num_stages)
      .def_readonly("num_microbatches", &Schedule::num_microbatches)
      .def_readonly("num_replicas", &Schedule::num_replicas)
      .def_property_readonly("num_ranks", &Schedule::num_ranks)
      .def("actions", [](const Schedule& s, int rank) {
        SY_REQUIRE(rank >= 0 && rank < s.num_ranks(), "Schedule.actions: rank " << rank << " is not in [0, " << s.num_ranks() << ")");
        std::vector<std::string> out;
        for (const auto& a : s.ranks[rank]) out.push_back(pipeline::to_string(a));
        return out;
      }, py::arg("rank"))
      .def("to_text", [](const Schedule& s) { return pipeline::to_text(s); })
      .def_static("from_text", &pipeline::parse_text, py::arg("text"))
      .def("__repr__", [](const Schedule& s) {
        return "Schedule(" + s.name + ", ranks=" + std::to_string(s.num_ranks()) +
               ", stages=" + std::to_string(s.num_stages) + ", microbatches=" + std::to_string(s.num_microbatches) + ")";
      });

  m.def("schedule_kinds", [] {
    std::vector<std::string> out;
    for (auto k : pipeline::all_schedule_kinds()) out.push_back(pipeline::schedule_kind_name(k));
    return out;
  });
  // Generators already place P2P actions; add_p2p re-places missing ones (kRounds not exposed).
  m.def("generate_schedule", [](const std::string& kind, int num_ranks, int num_microbatches, int num_chunks,
                                 bool add_p2p, int num_replicas) {
    pipeline::GeneratorOptions o;
    o.num_ranks = num_ranks;
    o.num_microbatches = num_microbatches;
    o.num_chunks = num_chunks;
    Schedule s = pipeline::generate(pipeline::parse_schedule_kind(kind), o);
    if (add_p2p) pipeline::add_p2p(s);
    if (num_replicas > 1) s = pipeline::replicate(s, num_replicas);
    return s;
  }, py::arg("kind"), py::arg("num_ranks"), py::arg("num_microbatches"), py::arg("num_chunks") = 2,
     py::arg("add_p2p") = false, py::arg("num_replicas") = 1);
  m.def("verify_schedule", [](const Schedule& s) {
    pipeline::VerifyReport r = pipeline::verify(s);
    py::dict d;
    d["peak_activations"] = r.peak_activations;
    d["num_transfers"] = r.num_transfers;
    d["num_reductions"] = r.num_reductions;
    return d;
  }, py::arg("schedule"));
  m.def("simulate_schedule", [](const Schedule& s, double f, double b, double w, double p2p_latency,
                                 double reduce_time) {
    pipeline::SimOptions o;
    o.f = f;
    o.b = b;
    o.w = w;
    o.p2p_latency = p2p_latency;
    o.reduce_time = reduce_time;
    return sim_result_dict(pipeline::simulate(s, o));
  }, py::arg("schedule"), py::arg("f") = 1.0, py::arg("b") = 2.0, py::arg("w") = 1.0, py::arg("p2p_latency") = 0.0,
     py::arg("reduce_time") = 0.0);
  m.def("closed_form_bubble", [](const std::string& kind, int num_ranks, double f, double b, double w) {
    pipeline::SimOptions o;
    o.f = f;
    o.b = b;
    o.w = w;
    return pipeline::closed_form_bubble(kind, num_ranks, o);
  }, py::arg("kind"), py::arg("num_ranks"), py::arg("f") = 1.0, py::arg("b") = 2.0, py::arg("w") = 1.0);

  py::class_<pipeline::Executor>(m, "_Executor")
      .def(py::init(&make_executor), py::arg("comm"), py::arg("schedule"), py::arg("activation_elems"),
           py::arg("forward"), py::arg("backward_input"), py::arg("backward_weight"), py::arg("gradients"))
      .def("run", [](pipeline::Executor& e) {
        py::gil_scoped_release nogil;
        e.run();
      });
}

}  // namespace
}  // namespace switchyard::python

PYBIND11_MODULE(_C, m) {
  m.doc() = "Switchyard C++ libraries (comm, dispatch, pipeline); use the switchyard package.";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const switchyard::Error& e) {
      switchyard::python::raise_switchyard_error(e);
    }
  });
  switchyard::python::bind_comm(m);
  switchyard::python::bind_dispatch(m);
  switchyard::python::bind_pipeline(m);
}
