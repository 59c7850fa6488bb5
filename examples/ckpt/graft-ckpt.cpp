// graft-ckpt: look into, compare and convert checkpoints from the command line, through the
// same readers and pipeline stages a program uses (see docs/graft-ckpt.md).
//
//   graft-ckpt inspect FILE|ADAPTER_DIR [--json]
//   graft-ckpt diff A B                      exit 0 if identical, 1 if not
//   graft-ckpt convert IN OUT [--filter GLOB]... [--strip-prefix P] [--rename FROM=TO]...
//                             [--format torch_save|torch_save_legacy|safetensors]
//   graft-ckpt lora-merge BASE ADAPTER_DIR OUT [--strip-prefix P] [--format ...]
//   graft-ckpt combine METHOD OUT IN... [--base B] [--weights W,...] [--t T] [--density D]
//                      [--lambda L] [--normalize yes|no] [--rescale R] [--seed S]
//                      [--where GLOB:SETTING=V[,SETTING=V]...]... [--format ...] [--progress]
//   graft-ckpt lora-combine TYPE OUT_DIR ADAPTER_DIR... [--weights W,...] [--density D]
//                           [--majority total|frequency] [--svd-rank R] [--svd-clamp Q] [--seed S]
//
// Errors graft reports (a malformed file, a filter that keeps nothing, ...) print as
// "graft-ckpt: <message>" and exit with 2.

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <graft/combine.hpp>
#include <graft/graft.hpp>

namespace {

using json = nlohmann::ordered_json;

// Python's name for a dtype, without "torch.": what print(t.dtype) shows.
std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return "float32";
    case c10::kDouble: return "float64";
    case c10::kHalf: return "float16";
    case c10::kBFloat16: return "bfloat16";
    case c10::kLong: return "int64";
    case c10::kInt: return "int32";
    case c10::kShort: return "int16";
    case c10::kChar: return "int8";
    case c10::kByte: return "uint8";
    case c10::kBool: return "bool";
    case c10::kComplexFloat: return "complex64";
    case c10::kComplexDouble: return "complex128";
    case c10::kComplexHalf: return "complex32";
    default: return c10::toString(t);
  }
}

json to_json(const graft::value& v) {
  if (v.is_none()) return nullptr;
  if (v.is_bool()) return v.as_bool();
  if (v.is_int()) return v.as_int();
  if (v.is_float()) return v.as_number();
  if (v.is_string()) return v.as_string();
  if (v.is_bytes()) return fmt::format("<{} bytes>", std::get<graft::value::bytes>(v.raw()).data.size());
  if (v.is_tensor()) return fmt::format("<tensor {}>", dtype_name(v.as_tensor().scalar_type()));
  if (v.is_sequence()) {
    json a = json::array();
    for (auto& c : v.as_sequence().items) a.push_back(to_json(c));
    return a;
  }
  json o = json::object();
  for (auto& [k, c] : v.as_dict()) o[k.key_text()] = to_json(c);
  return o;
}

// The float64 sum of the elements, as Python's t.double().sum().item() computes it.
double sum_of(const torch::Tensor& t) {
  if (t.is_complex()) return torch::real(t).to(torch::kDouble).sum().item<double>();
  return t.to(torch::kDouble).sum().item<double>();
}

std::string human_bytes(std::int64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double x = static_cast<double>(n);
  int u = 0;
  while (x >= 1024 && u < 4) x /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {} ({} bytes)", x, units[u], n);
}

// A safetensors file's "__metadata__" (an index's "metadata"): strings beside the tensors.
std::map<std::string, std::string> file_metadata(const std::string& path, graft::checkpoint_format format) {
  if (format != graft::checkpoint_format::safetensors && format != graft::checkpoint_format::safetensors_index) return {};
  return graft::read_safetensors_metadata(graft::checkpoint_file(path));
}

// A PEFT adapter folder: its config's LoRA settings, then its tensors as for a file.
int inspect_adapter(const std::string& folder, bool as_json);
json inspect_json(const std::string& path);
int inspect(const std::string& path, bool as_json);

bool is_adapter_folder(const std::string& path) {
  return std::filesystem::is_directory(path) && std::filesystem::exists(std::filesystem::path(path) / "adapter_config.json");
}

int inspect_adapter(const std::string& folder, bool as_json) {
  auto config = json::parse(graft::lora::read_adapter_config(folder).json);  // checked by graft
  json settings;
  for (auto* key : {"peft_type", "r", "lora_alpha", "lora_dropout", "use_rslora", "bias", "target_modules", "exclude_modules",
                    "modules_to_save", "rank_pattern", "alpha_pattern", "base_model_name_or_path"})
    if (config.contains(key)) settings[key] = config[key];
  auto weights = std::filesystem::is_regular_file(std::filesystem::path(folder) / "adapter_model.safetensors")
                     ? (std::filesystem::path(folder) / "adapter_model.safetensors").string()
                     : (std::filesystem::path(folder) / "adapter_model.bin").string();
  if (as_json) {
    auto out = inspect_json(weights);
    out["adapter_config"] = settings;
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  fmt::print("{}: PEFT adapter folder\n", folder);
  for (auto& [k, v] : settings.items()) fmt::print("  {} = {}\n", k, v.dump());
  return inspect(weights, false);
}

// inspect --json's object for a checkpoint file.
json inspect_json(const std::string& path) {
  auto format = graft::detect_format(path);
  auto sd = graft::state_dict::from_value(graft::read_value(path));
  for (auto& [k, v] : file_metadata(path, format)) sd.extras().emplace_back(k, v);
  json out;
  out["format"] = std::string(graft::to_string(format));
  json tensors = json::object();
  for (auto& e : sd) {
    tensors[e.key] = {{"dtype", dtype_name(e.tensor.scalar_type())},
                      {"shape", e.tensor.sizes().vec()},
                      {"numel", e.tensor.numel()},
                      {"sum", sum_of(e.tensor)}};
  }
  out["tensors"] = std::move(tensors);
  json meta = json::object();
  for (auto& [k, v] : sd.extras()) meta[k] = to_json(v);
  out["metadata"] = std::move(meta);
  return out;
}

int inspect(const std::string& path, bool as_json) {
  if (is_adapter_folder(path)) return inspect_adapter(path, as_json);
  if (as_json) {
    std::cout << inspect_json(path).dump(2) << '\n';
    return 0;
  }
  auto format = graft::detect_format(path);
  auto sd = graft::state_dict::from_value(graft::read_value(path));
  for (auto& [k, v] : file_metadata(path, format)) sd.extras().emplace_back(k, v);
  fmt::print("{}: {}\n", path, graft::to_string(format));
  std::size_t width = 0;
  for (auto& e : sd) width = std::max(width, e.key.size());
  fmt::print("{} tensors:\n", sd.size());
  for (auto& e : sd)
    fmt::print("  {:<{}}  {:<8}  [{}]\n", e.key, width, dtype_name(e.tensor.scalar_type()),
               fmt::join(e.tensor.sizes(), ", "));
  fmt::print("total: {}\n", human_bytes(sd.nbytes()));
  if (!sd.extras().empty()) {
    fmt::print("metadata:\n");
    for (auto& [k, v] : sd.extras()) fmt::print("  {} = {}\n", k, to_json(v).dump());
  }
  return 0;
}

int diff(const std::string& a_path, const std::string& b_path) {
  auto a = graft::state_dict::from_value(graft::read_value(a_path));
  auto b = graft::state_dict::from_value(graft::read_value(b_path));
  bool different = false;
  for (auto& e : a)
    if (!b.contains(e.key)) fmt::print("only in A: {}\n", e.key), different = true;
  for (auto& e : b)
    if (!a.contains(e.key)) fmt::print("only in B: {}\n", e.key), different = true;
  std::size_t same = 0;
  for (auto& e : a) {
    auto* o = b.find(e.key);
    if (!o) continue;
    auto& x = e.tensor;
    auto& y = o->tensor;
    if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type()) {
      fmt::print("differs:   {}: {} [{}] vs {} [{}]\n", e.key, dtype_name(x.scalar_type()), fmt::join(x.sizes(), ", "),
                 dtype_name(y.scalar_type()), fmt::join(y.sizes(), ", "));
      different = true;
      continue;
    }
    auto xd = x.to(torch::kDouble), yd = y.to(torch::kDouble);
    // NaNs in the same places count as equal, as torch.testing's equal_nan does.
    auto unequal = (xd != yd) & ~(torch::isnan(xd) & torch::isnan(yd));
    if (unequal.any().item<bool>()) {
      auto max_abs = (xd - yd).abs().masked_select(unequal).max().item<double>();
      fmt::print("differs:   {}: max abs diff {:g} ({} of {} elements)\n", e.key, max_abs,
                 unequal.sum().item<std::int64_t>(), x.numel());
      different = true;
    } else {
      ++same;
    }
  }
  std::map<std::string, std::string> ma, mb;
  for (auto& [k, v] : a.extras()) ma[k] = to_json(v).dump();
  for (auto& [k, v] : b.extras()) mb[k] = to_json(v).dump();
  for (auto& [k, v] : ma) {
    auto it = mb.find(k);
    if (it == mb.end()) fmt::print("metadata only in A: {} = {}\n", k, v), different = true;
    else if (it->second != v) fmt::print("metadata differs: {}: {} vs {}\n", k, v, it->second), different = true;
  }
  for (auto& [k, v] : mb)
    if (!ma.contains(k)) fmt::print("metadata only in B: {} = {}\n", k, v), different = true;
  fmt::print("{}: {} tensors equal\n", different ? "different" : "identical", same);
  return different ? 1 : 0;
}

struct convert_options {
  std::string in, out;
  std::vector<std::string> filters;
  std::string strip_prefix;
  std::vector<std::string> renames;
  std::string format;
};

int convert(const convert_options& o) {
  auto sd = graft::read(o.in) | graft::collect();
  std::size_t read_count = sd.size();
  if (!o.filters.empty()) {
    std::vector<graft::glob> globs;
    for (auto& f : o.filters) globs.emplace_back(graft::runtime(f));
    auto any = graft::where(
        [globs](std::string_view k) {
          for (auto& g : globs)
            if (g.matches_path(k)) return true;
          return false;
        },
        fmt::format("{}", fmt::join(o.filters, " | ")));
    sd = graft::apply(std::move(sd), graft::filter(any));
  }
  if (!o.strip_prefix.empty()) sd = graft::apply(std::move(sd), graft::strip_prefix(o.strip_prefix));
  if (!o.renames.empty()) {
    std::map<std::string, std::string, std::less<>> table;
    for (auto& r : o.renames) {
      auto eq = r.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == r.size())
        throw graft::option_error(fmt::format("--rename '{}': expected FROM=TO", r));
      table.emplace(r.substr(0, eq), r.substr(eq + 1));
    }
    sd = graft::apply(std::move(sd), graft::rename_keys(std::move(table)));
  }
  auto format = graft::format_for(o.out);
  if (o.format == "torch_save") format = graft::checkpoint_format::torch_save;
  else if (o.format == "torch_save_legacy") format = graft::checkpoint_format::torch_save_legacy;
  else if (o.format == "safetensors") format = graft::checkpoint_format::safetensors;
  graft::save(sd, o.out, format);
  fmt::print("wrote {} of {} tensors to {} ({}, {})\n", sd.size(), read_count, o.out, graft::to_string(format),
             human_bytes(sd.nbytes()));
  return 0;
}

struct lora_merge_options {
  std::string base, adapter, out, strip_prefix, format;
};

int lora_merge(const lora_merge_options& o) {
  auto sd = graft::state_dict::from_value(graft::read_value(o.base));
  if (!o.strip_prefix.empty()) sd = graft::apply(std::move(sd), graft::strip_prefix(o.strip_prefix));
  auto report = graft::lora::merge_into(sd, o.adapter);
  auto format = graft::format_for(o.out);
  if (o.format == "torch_save") format = graft::checkpoint_format::torch_save;
  else if (o.format == "torch_save_legacy") format = graft::checkpoint_format::torch_save_legacy;
  else if (o.format == "safetensors") format = graft::checkpoint_format::safetensors;
  graft::save(sd, o.out, format);
  fmt::print("merged the adapter into {} weights ({}) and replaced {} tensors; wrote {} tensors to {} ({}, {})\n",
             report.merged.size(), fmt::join(report.merged, ", "), report.replaced.size(), sd.size(), o.out,
             graft::to_string(format), human_bytes(sd.nbytes()));
  return 0;
}

struct lora_combine_options {
  std::string type, out, majority = "total";
  std::vector<std::string> inputs;
  std::vector<double> weights;
  std::optional<double> density, svd_clamp;
  std::optional<std::int64_t> svd_rank;
  std::uint64_t seed = 0;
};

int lora_combine(const lora_combine_options& o) {
  graft::lora::weighted_options w{.combination = graft::lora::adapter_combination_from_string(o.type),
                                  .density = o.density,
                                  .majority = o.majority == "frequency" ? graft::lora::majority_sign::frequency
                                                                        : graft::lora::majority_sign::total,
                                  .svd_rank = o.svd_rank,
                                  .svd_clamp = o.svd_clamp,
                                  .seed = o.seed};
  auto weights = o.weights.empty() ? std::vector<double>(o.inputs.size(), 1.0) : o.weights;
  auto r = graft::lora::combine_adapters(o.inputs, weights, o.out, w);
  fmt::print("{} of {} adapters: rank {} on {} layers ({}); wrote {}\n", graft::lora::to_string(r.combination), o.inputs.size(),
             r.r, r.layers.size(), fmt::join(r.layers, ", "), o.out);
  if (!r.partial.empty()) fmt::print("  adapted by some inputs only: {}\n", fmt::join(r.partial, ", "));
  return 0;
}

struct combine_options {
  std::string method, out, base, format, normalize, rescale;
  std::vector<std::string> inputs, wheres;
  std::vector<double> weights;
  std::optional<double> t, density, lambda;
  std::uint64_t seed = 0;
  bool progress = false;
};

double number(const std::string& text, const std::string& what) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') throw graft::option_error(fmt::format("{}: '{}' is not a number", what, text));
  return v;
}

// --where GLOB:SETTING=V[,SETTING=V]...: t, density, lambda, take (an input's index or "base"),
// weights (W/W/...).
graft::combine_params where_params(const std::string& text, const std::string& rest) {
  graft::combine_params p;
  std::size_t at = 0;
  while (at <= rest.size()) {
    auto comma = rest.find(',', at);
    auto item = rest.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    auto eq = item.find('=');
    if (eq == std::string::npos) throw graft::option_error(fmt::format("--where '{}': expected SETTING=VALUE, not '{}'", text, item));
    auto key = item.substr(0, eq), v = item.substr(eq + 1);
    auto what = fmt::format("--where '{}'", text);
    if (key == "t") p.t = number(v, what);
    else if (key == "density") p.density = number(v, what);
    else if (key == "lambda") p.lambda = number(v, what);
    else if (key == "take") p.take = v == "base" ? graft::from_base : static_cast<std::size_t>(number(v, what));
    else if (key == "weights") {
      std::size_t s = 0;
      while (s <= v.size()) {
        auto slash = v.find('/', s);
        p.weights.push_back(number(v.substr(s, slash == std::string::npos ? std::string::npos : slash - s), what));
        if (slash == std::string::npos) break;
        s = slash + 1;
      }
    } else {
      throw graft::option_error(fmt::format("--where '{}': unknown setting '{}' (t, density, lambda, take, weights)", text, key));
    }
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return p;
}

int combine(const combine_options& o) {
  auto method = graft::combine_method_named(o.method);
  if (!method)
    throw graft::option_error(fmt::format("unknown method '{}': interpolate (wise-ft), linear (average), task_arithmetic, ties, "
                                          "dare_linear, dare_ties, slerp", o.method));
  std::vector<graft::combine_input> inputs(o.inputs.begin(), o.inputs.end());
  std::optional<graft::combine_input> base;
  if (!o.base.empty()) base.emplace(o.base);
  graft::combination c(*method, std::move(inputs), std::move(base));
  c.weights(o.weights).seed(o.seed);
  if (o.t) c.t(*o.t);
  if (o.density) c.density(*o.density);
  if (o.lambda) c.lambda(*o.lambda);
  if (!o.normalize.empty()) c.normalize(o.normalize == "yes");
  if (o.rescale == "inverse_density") c.rescale(graft::dare_rescale::inverse_density);
  else if (o.rescale == "none") c.rescale(graft::dare_rescale::none);
  for (const auto& w : o.wheres) {
    auto colon = w.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw graft::option_error(fmt::format("--where '{}': expected GLOB:SETTING=VALUE", w));
    c.where(graft::glob(graft::runtime(w.substr(0, colon))), where_params(w, w.substr(colon + 1)));
  }
  if (o.progress || ::isatty(2)) {
    c.on_progress([](const graft::combine_progress& p) {
      const int width = 30;
      const int filled = p.bytes_total ? static_cast<int>(width * p.bytes_done / p.bytes_total) : width;
      std::fprintf(stderr, "\r[%s%s] %zu/%zu tensors, %s of %s", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), p.done, p.total, human_bytes(p.bytes_done).c_str(),
                   human_bytes(p.bytes_total).c_str());
      if (p.done == p.total) std::fputc('\n', stderr);
    });
  }
  auto format = graft::format_for(o.out);
  if (o.format == "torch_save") format = graft::checkpoint_format::torch_save;
  else if (o.format == "safetensors") format = graft::checkpoint_format::safetensors;
  auto report = c.save(o.out, format);
  fmt::print("{}\n", report.to_string());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"graft-ckpt: inspect, compare, convert, LoRA-merge and combine checkpoints (torch.save, safetensors, libtorch archives), "
               "and combine LoRA adapters"};
  app.require_subcommand(1);

  std::string file;
  bool as_json = false;
  auto* inspect_cmd = app.add_subcommand("inspect", "Show a checkpoint's (or a PEFT adapter folder's) format, tensors and metadata");
  inspect_cmd->add_option("FILE", file, "Checkpoint, or adapter folder, to read")->required();
  inspect_cmd->add_flag("--json", as_json, "One JSON object: format, tensors (dtype, shape, numel, sum), metadata");

  std::string a, b;
  auto* diff_cmd = app.add_subcommand("diff", "Compare two checkpoints; exit 0 if identical, 1 if not");
  diff_cmd->add_option("A", a, "First checkpoint")->required();
  diff_cmd->add_option("B", b, "Second checkpoint")->required();

  convert_options co;
  auto* convert_cmd = app.add_subcommand("convert", "Rewrite a checkpoint, optionally filtered and renamed");
  convert_cmd->add_option("IN", co.in, "Checkpoint to read")->required();
  convert_cmd->add_option("OUT", co.out, "File to write")->required();
  convert_cmd->add_option("--filter", co.filters, "Keep keys matching this glob (repeatable; any match keeps)");
  convert_cmd->add_option("--strip-prefix", co.strip_prefix, "Remove this prefix from keys (after filtering)");
  convert_cmd->add_option("--rename", co.renames, "Rename a key, FROM=TO (repeatable; after --strip-prefix)");
  convert_cmd->add_option("--format", co.format, "Output format (default: from OUT's name)")
      ->check(CLI::IsMember({"torch_save", "torch_save_legacy", "safetensors"}));

  lora_merge_options lo;
  auto* lora_cmd = app.add_subcommand("lora-merge", "Fold a PEFT LoRA adapter folder into a base checkpoint");
  lora_cmd->add_option("BASE", lo.base, "Base checkpoint (its keys: the model's paths, after --strip-prefix)")->required();
  lora_cmd->add_option("ADAPTER_DIR", lo.adapter, "Folder with adapter_config.json and adapter_model.safetensors (or .bin)")->required();
  lora_cmd->add_option("OUT", lo.out, "File to write")->required();
  lora_cmd->add_option("--strip-prefix", lo.strip_prefix, "Remove this prefix from BASE's keys first (e.g. model.)");
  lora_cmd->add_option("--format", lo.format, "Output format (default: from OUT's name)")
      ->check(CLI::IsMember({"torch_save", "torch_save_legacy", "safetensors"}));

  combine_options cb;
  auto* combine_cmd = app.add_subcommand("combine", "Combine checkpoints in weight space (WiSE-FT, soups, task arithmetic, TIES, DARE, SLERP)");
  combine_cmd->add_option("METHOD", cb.method,
                          "interpolate (wise-ft), linear (average), task_arithmetic, ties, dare_linear, dare_ties, slerp")->required();
  combine_cmd->add_option("OUT", cb.out, "File to write (.safetensors, or torch.save)")->required();
  combine_cmd->add_option("IN", cb.inputs, "Checkpoints to combine (files, sharded indexes, model folders)")->required();
  combine_cmd->add_option("--base", cb.base, "The base: task methods' pretrained checkpoint; slerp's t = 0 end");
  combine_cmd->add_option("--weights", cb.weights, "One weight per input")->delimiter(',');
  combine_cmd->add_option("--t", cb.t, "interpolate's and slerp's factor (0: the first input or the base, 1: the other)");
  combine_cmd->add_option("--density", cb.density, "ties, dare: the fraction of each task vector kept, in (0, 1]");
  combine_cmd->add_option("--lambda", cb.lambda, "Task methods: the factor of the mixed task vector (default 1)");
  combine_cmd->add_option("--normalize", cb.normalize, "Divide by the sum of the weights (default: mergekit's per method)")
      ->check(CLI::IsMember({"yes", "no"}));
  combine_cmd->add_option("--rescale", cb.rescale, "DARE's rescaling: l1 (default, mergekit's), inverse_density, none")
      ->check(CLI::IsMember({"l1", "inverse_density", "none"}));
  combine_cmd->add_option("--seed", cb.seed, "DARE's seed (default 0)");
  combine_cmd->add_option("--where", cb.wheres,
                          "Settings for the keys a glob picks, GLOB:SETTING=V[,SETTING=V]: t, density, lambda, "
                          "weights (W/W/...), take (an input's index from 0, or base) (repeatable; the first match applies)");
  combine_cmd->add_option("--format", cb.format, "Output format (default: from OUT's name)")
      ->check(CLI::IsMember({"torch_save", "safetensors"}));
  combine_cmd->add_flag("--progress", cb.progress, "Show a progress bar on stderr (shown anyway when stderr is a terminal)");

  lora_combine_options lc;
  auto* lora_combine_cmd = app.add_subcommand("lora-combine", "Combine PEFT LoRA adapter folders into one (PEFT's add_weighted_adapter)");
  lora_combine_cmd->add_option("TYPE", lc.type,
                               "svd, linear, cat, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd, "
                               "magnitude_prune, magnitude_prune_svd")->required();
  lora_combine_cmd->add_option("OUT_DIR", lc.out, "Adapter folder to write")->required();
  lora_combine_cmd->add_option("ADAPTER_DIR", lc.inputs, "Adapter folders made for one base model")->required();
  lora_combine_cmd->add_option("--weights", lc.weights, "One weight per adapter (default 1 each; negative subtracts)")->delimiter(',');
  lora_combine_cmd->add_option("--density", lc.density, "ties, dare, magnitude_prune: the fraction of each tensor kept, in [0, 1]");
  lora_combine_cmd->add_option("--majority", lc.majority, "TIES's sign election: total (default) or frequency")
      ->check(CLI::IsMember({"total", "frequency"}));
  lora_combine_cmd->add_option("--svd-rank", lc.svd_rank, "The SVD types' output rank (default: the largest input rank)");
  lora_combine_cmd->add_option("--svd-clamp", lc.svd_clamp, "The SVD types: clamp the factors to this quantile, in [0, 1]");
  lora_combine_cmd->add_option("--seed", lc.seed, "DARE's seed (default 0)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*inspect_cmd) return inspect(file, as_json);
    if (*diff_cmd) return diff(a, b);
    if (*convert_cmd) return convert(co);
    if (*lora_cmd) return lora_merge(lo);
    if (*combine_cmd) return combine(cb);
    if (*lora_combine_cmd) return lora_combine(lc);
  } catch (const graft::error& e) {
    std::fprintf(stderr, "graft-ckpt: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // c10::Error from a tensor op, std::bad_alloc, ...
    std::fprintf(stderr, "graft-ckpt: %s\n", e.what());
    return 2;
  }
  return 2;
}
