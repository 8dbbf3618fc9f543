// Text and JSON forms of a Schedule (see schedule_format.h for the grammar).
#include "switchyard/pipeline/schedule_format.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::pipeline {

namespace {

SubStepKind parse_sub_step_kind(const std::string& name) {
  for (SubStepKind k : {SubStepKind::kAttention, SubStepKind::kDispatch, SubStepKind::kExperts, SubStepKind::kCombine})
    if (name == sub_step_kind_name(k)) return k;
  SY_THROW(InvalidArgument, "unknown sub-step '" << name << "' (valid: ATTN DISPATCH EXPERTS COMBINE)");
}

std::string sub_step_text(const SubStep& s) {
  std::ostringstream os;
  os << sub_step_kind_name(s.kind) << (s.backward ? ".B" : ".F") << " l" << s.layer << " s" << s.stage << " m"
     << s.microbatch;
  return os.str();
}

// Token reader over the text form with line numbers for error messages.
class Tokens {
 public:
  explicit Tokens(const std::string& text) {
    std::istringstream in(text);
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      auto hash = line.find('#');
      if (hash != std::string::npos) line.resize(hash);
      std::istringstream ls(line);
      std::string tok;
      while (ls >> tok) toks_.push_back({tok, line_no});
    }
  }
  bool done() const { return pos_ >= toks_.size(); }
  const std::string& peek() const {
    static const std::string kEnd = "<end>";
    return done() ? kEnd : toks_[pos_].text;
  }
  std::string next(const char* what) {
    if (done()) SY_THROW(InvalidArgument, "schedule text: unexpected end of input, expected " << what);
    return toks_[pos_++].text;
  }
  void expect(const std::string& word) {
    int line = this->line();
    std::string t = next(word.c_str());
    if (t != word) SY_THROW(InvalidArgument, "schedule text line " << line << ": expected '" << word << "', got '" << t << "'");
  }
  int integer(const char* what) {
    int line = this->line();
    std::string t = next(what);
    try {
      size_t used = 0;
      int v = std::stoi(t, &used);
      if (used == t.size()) return v;
    } catch (const std::exception&) {
    }
    SY_THROW(InvalidArgument, "schedule text line " << line << ": expected an integer " << what << ", got '" << t << "'");
  }
  // A token "<prefix><int>", e.g. "s3".
  int prefixed(char prefix, const char* what) {
    int line = this->line();
    std::string t = next(what);
    if (t.size() >= 2 && t[0] == prefix) {
      try {
        size_t used = 0;
        int v = std::stoi(t.substr(1), &used);
        if (used == t.size() - 1) return v;
      } catch (const std::exception&) {
      }
    }
    SY_THROW(InvalidArgument, "schedule text line " << line << ": expected " << what << " as '" << prefix
                                                    << "<number>', got '" << t << "'");
  }
  int line() const { return done() ? -1 : toks_[pos_].line; }

 private:
  struct Tok {
    std::string text;
    int line;
  };
  std::vector<Tok> toks_;
  size_t pos_ = 0;
};

bool is_int(const std::string& t) {
  if (t.empty()) return false;
  size_t i = (t[0] == '-') ? 1 : 0;
  if (i == t.size()) return false;
  for (; i < t.size(); ++i)
    if (t[i] < '0' || t[i] > '9') return false;
  return true;
}

std::vector<int> int_list(Tokens& t) {
  std::vector<int> v;
  while (!t.done() && is_int(t.peek())) v.push_back(t.integer("list entry"));
  return v;
}

Action parse_action(Tokens& t) {
  Action a;
  a.kind = parse_op_kind(t.next("op"));
  a.stage = t.prefixed('s', "stage");
  if (a.kind == OpKind::kReduceGrad) return a;
  a.microbatch = t.prefixed('m', "micro-batch");
  if (a.kind == OpKind::kForwardBackward) {
    t.expect("/");
    a.bwd_stage = t.prefixed('s', "backward stage");
    a.bwd_microbatch = t.prefixed('m', "backward micro-batch");
  }
  if (is_p2p(a.kind)) a.peer = t.prefixed('r', "peer rank");
  if (t.peek() == "{") {
    t.next("{");
    while (t.peek() != "}") {
      std::string kind = t.next("sub-step");
      auto dot = kind.find('.');
      if (dot == std::string::npos || (kind.substr(dot) != ".F" && kind.substr(dot) != ".B"))
        SY_THROW(InvalidArgument, "schedule text: sub-step '" << kind << "' must end in .F or .B");
      SubStep s;
      s.kind = parse_sub_step_kind(kind.substr(0, dot));
      s.backward = kind.substr(dot) == ".B";
      s.layer = t.prefixed('l', "layer");
      s.stage = t.prefixed('s', "stage");
      s.microbatch = t.prefixed('m', "micro-batch");
      a.sub_steps.push_back(s);
      if (t.peek() == ";") t.next(";");
    }
    t.next("}");
  }
  return a;
}

void json_ints(const nlohmann::json& j, const char* key, std::vector<int>& out) {
  out = j.at(key).get<std::vector<int>>();
}

}  // namespace

std::string to_text(const Schedule& s) {
  std::ostringstream os;
  os << "schedule " << (s.name.empty() ? "unnamed" : s.name) << " stages " << s.num_stages << " microbatches "
     << s.num_microbatches << " replicas " << s.num_replicas << " ranks " << s.num_ranks() << "\n";
  for (size_t p = 0; p < s.paths.size(); ++p) {
    os << "path " << p;
    for (int r : s.paths[p]) os << " " << r;
    os << "\n";
  }
  os << "mbpath";
  for (int p : s.microbatch_path) os << " " << p;
  os << "\n";
  for (const auto& g : s.ep_groups) {
    os << "epgroup";
    for (int r : g) os << " " << r;
    os << "\n";
  }
  for (int r = 0; r < s.num_ranks(); ++r) {
    os << "rank " << r << "\n";
    for (const Action& a : s.ranks[r]) {
      os << "  " << to_string(a);
      if (!a.sub_steps.empty()) {
        os << " {";
        for (size_t i = 0; i < a.sub_steps.size(); ++i) os << (i ? " ; " : " ") << sub_step_text(a.sub_steps[i]);
        os << " }";
      }
      os << "\n";
    }
  }
  return os.str();
}

Schedule parse_text(const std::string& text) {
  Tokens t(text);
  Schedule s;
  t.expect("schedule");
  s.name = t.next("schedule name");
  if (s.name == "unnamed") s.name.clear();
  t.expect("stages");
  s.num_stages = t.integer("stages");
  t.expect("microbatches");
  s.num_microbatches = t.integer("microbatches");
  t.expect("replicas");
  s.num_replicas = t.integer("replicas");
  t.expect("ranks");
  int num_ranks = t.integer("ranks");
  SY_REQUIRE(num_ranks > 0 && num_ranks <= 1 << 20, "schedule text: ranks = " << num_ranks << " out of range");
  s.ranks.resize(num_ranks);
  int current = -1;
  while (!t.done()) {
    int line = t.line();
    const std::string& w = t.peek();
    if (w == "path") {
      t.next("path");
      int id = t.integer("path id");
      SY_REQUIRE(id == static_cast<int>(s.paths.size()),
                 "schedule text line " << line << ": path " << id << " out of order (expected " << s.paths.size() << ")");
      s.paths.push_back(int_list(t));
    } else if (w == "mbpath") {
      t.next("mbpath");
      s.microbatch_path = int_list(t);
    } else if (w == "epgroup") {
      t.next("epgroup");
      s.ep_groups.push_back(int_list(t));
    } else if (w == "rank") {
      t.next("rank");
      current = t.integer("rank");
      SY_REQUIRE(current >= 0 && current < num_ranks,
                 "schedule text line " << line << ": rank " << current << " outside [0, " << num_ranks << ")");
    } else {
      SY_REQUIRE(current >= 0, "schedule text line " << line << ": action '" << w << "' before any 'rank N' line");
      s.ranks[current].push_back(parse_action(t));
    }
  }
  check_shape(s);
  return s;
}

nlohmann::json to_json(const Schedule& s) {
  nlohmann::json j;
  j["name"] = s.name;
  j["num_stages"] = s.num_stages;
  j["num_microbatches"] = s.num_microbatches;
  j["num_replicas"] = s.num_replicas;
  j["paths"] = s.paths;
  j["microbatch_path"] = s.microbatch_path;
  j["ep_groups"] = s.ep_groups;
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& list : s.ranks) {
    nlohmann::json actions = nlohmann::json::array();
    for (const Action& a : list) {
      nlohmann::json ja = {{"op", op_kind_name(a.kind)}, {"stage", a.stage}};
      if (a.kind != OpKind::kReduceGrad) ja["mb"] = a.microbatch;
      if (is_p2p(a.kind)) ja["peer"] = a.peer;
      if (a.kind == OpKind::kForwardBackward) {
        ja["bwd_stage"] = a.bwd_stage;
        ja["bwd_mb"] = a.bwd_microbatch;
      }
      if (!a.sub_steps.empty()) {
        nlohmann::json subs = nlohmann::json::array();
        for (const SubStep& ss : a.sub_steps)
          subs.push_back({{"kind", sub_step_kind_name(ss.kind)},
                          {"backward", ss.backward},
                          {"layer", ss.layer},
                          {"stage", ss.stage},
                          {"mb", ss.microbatch}});
        ja["sub_steps"] = subs;
      }
      actions.push_back(ja);
    }
    ranks.push_back(actions);
  }
  j["ranks"] = ranks;
  return j;
}

Schedule from_json(const nlohmann::json& j) {
  Schedule s;
  try {
    s.name = j.at("name").get<std::string>();
    s.num_stages = j.at("num_stages").get<int>();
    s.num_microbatches = j.at("num_microbatches").get<int>();
    s.num_replicas = j.value("num_replicas", 1);
    s.paths = j.at("paths").get<std::vector<std::vector<int>>>();
    json_ints(j, "microbatch_path", s.microbatch_path);
    if (j.contains("ep_groups")) s.ep_groups = j.at("ep_groups").get<std::vector<std::vector<int>>>();
    for (const auto& list : j.at("ranks")) {
      std::vector<Action> actions;
      for (const auto& ja : list) {
        Action a;
        a.kind = parse_op_kind(ja.at("op").get<std::string>());
        a.stage = ja.at("stage").get<int>();
        a.microbatch = ja.value("mb", -1);
        a.peer = ja.value("peer", -1);
        a.bwd_stage = ja.value("bwd_stage", -1);
        a.bwd_microbatch = ja.value("bwd_mb", -1);
        if (ja.contains("sub_steps")) {
          for (const auto& js : ja.at("sub_steps")) {
            SubStep ss;
            ss.kind = parse_sub_step_kind(js.at("kind").get<std::string>());
            ss.backward = js.at("backward").get<bool>();
            ss.layer = js.at("layer").get<int>();
            ss.stage = js.at("stage").get<int>();
            ss.microbatch = js.at("mb").get<int>();
            a.sub_steps.push_back(ss);
          }
        }
        actions.push_back(std::move(a));
      }
      s.ranks.push_back(std::move(actions));
    }
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "schedule JSON: " << e.what());
  }
  check_shape(s);
  return s;
}

}  // namespace switchyard::pipeline
