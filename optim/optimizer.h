#pragma once
// The optimizer base: named parameter groups, per-parameter state, zero_grad/step, state_dict.
//
//   auto opt = optim::AdamW(model.named_parameters(), {.lr = 3e-4, .weight_decay = 0.1});
//   opt.zero_grad(); loss.backward(); opt.step();
//
// Parameter groups work as in PyTorch: each group has its own lr and weight decay (a field left at
// kDefault takes the optimizer's option), so decay can skip biases and norms:
//
//   optim::AdamW opt({{.name = "decay", .params = matrices},
//                     {.name = "no_decay", .params = vectors, .weight_decay = 0.0}}, {.lr = 1e-3});
//
// `group.lr` is the *current* learning rate; schedules (optim/schedule.h) set it from
// `group.initial_lr`. Every update reads the group's lr at step() time, like torch.
//
// State (moments, step counts, slots) lives per parameter and is saved by state_dict() under
// "<group>.<param name>.<slot>", with the groups' current lr/weight decay, so that a resumed run
// continues bit-identically.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/serialize.h"
#include "core/tensor.h"

namespace liandan::optim {

using NamedParams = std::vector<std::pair<std::string, Tensor>>;

// A group field equal to kDefault takes the optimizer's option.
inline constexpr double kDefault = std::numeric_limits<double>::quiet_NaN();

struct ParamGroup {
  std::string name = "default";
  NamedParams params;
  double lr = kDefault;
  double weight_decay = kDefault;
  // Expected scale of the entries (Amos's η̃, Su's σ); kDefault derives it per tensor from its
  // initial values (see init_scale()). Used by Amos and by the per-tensor-lr strategy.
  double eta = kDefault;
  // Filled by the optimizer: the values schedules scale from.
  double initial_lr = 0, initial_weight_decay = 0;
};

// Su's "alchemy strategies" (kexue.fm/archives/9344), available to SGD, Adam and AdamW:
//  per_tensor_lr:     a tensor's step is lr·‖ε₀‖·u/‖u‖, with ‖ε₀‖ ≈ √k·σ (k entries, σ = the
//                     group's eta or the tensor's init scale) and u the optimizer's update direction:
//                     each tensor moves by a fixed fraction lr of its expected distance to the optimum.
//  tie_weight_decay:  decoupled decay θ ← θ − ρ_t·θ with ρ_t = α₀²/(2q) · s_t, where α₀ is the group's
//                     initial lr and s_t = lr/initial_lr the schedule's current factor. (Replaces the
//                     group's weight_decay value; groups with weight_decay 0 stay undecayed.)
struct Strategy {
  bool per_tensor_lr = false;
  bool tie_weight_decay = false;
  double q = 1.0;
};

// Option checks of the optimizers' constructors; the errors name the optimizer, the option and the value
// ("AdamW: lr must be a finite number >= 0, got nan").
void check_nonnegative(const std::string& who, const char* option, double v);  // finite, >= 0
void check_positive(const std::string& who, const char* option, double v);     // finite, > 0
void check_unit(const std::string& who, const char* option, double v);         // in [0, 1)
void check_strategy(const std::string& who, const Strategy& st);               // q finite and > 0

// The expected scale σ of a parameter's entries, from its values at construction: the RMS for tensors
// of rank ≥ 2 (random init, mean 0: RMS ≈ init std), 0.5 for vectors and scalars (biases, norm
// gains and shifts: Amos's choice), and 0.5 for an all-zero matrix.
double init_scale(const Tensor& p);

// One parameter and its optimizer state. `slots` are named state tensors (e.g. "exp_avg").
struct ParamState {
  std::string name;
  Tensor param;
  int64_t step = 0;
  bool initialized = false;  // init_state() has run
  double scale = 0.5;  // expected scale σ (group eta or init_scale), fixed at construction
  NamedTensors slots;
  Tensor& slot(const std::string& n);
  bool has_slot(const std::string& n) const;
};

// One parameter due for an update in this step: its state (step already incremented), its group, and its
// gradient (contiguous, of the parameter's shape and dtype).
struct PendingUpdate {
  ParamState* state;
  const ParamGroup* group;
  Tensor grad;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update to every parameter that has a gradient (parameters without one are skipped,
  // and their step count does not advance: PyTorch's behaviour).
  void step();
  // Drops gradients (set_to_none, PyTorch's default) or zeroes them in place.
  void zero_grad(bool set_to_none = true);

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  // Sets the current lr of every group to initial_lr·factor (what a schedule does).
  void set_lr_factor(double factor);
  const std::string& type_name() const { return type_name_; }

  NamedTensors state_dict() const;
  // Every tensor in `dict` must match a known state entry (name and shape), and every state entry
  // the optimizer has must be present: a mismatch is an Error naming the key (`source` names the file).
  void load_state_dict(const NamedTensors& dict, const std::string& source = "state dict");
  // Bytes held in optimizer state tensors (the slots; step counts excluded).
  int64_t state_bytes() const;
  // The per-tensor lr multiplier ‖ε₀‖/‖u‖ of the per_tensor_lr strategy (1 when off), from the direction u or
  // from Σu² (0 when u = 0).
  static double per_tensor_lr_factor(const ParamState& s, const Strategy& st, const Tensor& direction);
  static double per_tensor_lr_factor(const ParamState& s, double direction_sum_squares);
  // All per-parameter states, in group order.
  std::vector<std::vector<ParamState>>& states() { return states_; }

 protected:
  Optimizer(std::string type_name, std::vector<ParamGroup> groups, double default_lr,
            double default_weight_decay);
  // Creates the state tensors a parameter needs before its first update.
  virtual void init_state(ParamState& s, const ParamGroup& g) = 0;
  // Updates one parameter in place; s.step is already incremented. The gradient is contiguous and
  // of the parameter's shape and dtype.
  virtual void update(ParamState& s, const ParamGroup& g, const Tensor& grad) = 0;
  // Updates every parameter due in this step, across groups. The default calls update() for each; an
  // optimizer with a multi-tensor device kernel overrides it to update a device's parameters in a few
  // launches instead of one (or a dozen) per tensor.
  virtual void update_all(std::vector<PendingUpdate>& due);

  // The decoupled decay rate ρ for a group under the strategy (tied) or lr·wd (torch's AdamW).
  double decoupled_decay(const ParamGroup& g, const Strategy& st) const;
  // θ ← keep·θ − lr·f·dir, with f the per-tensor-lr factor of the strategy (1 when off). On a device with the
  // strategy on, the step waits until step() has every parameter's direction: their norms are then one batched
  // reduction and one copy back per step, not a synchronization per parameter.
  void step_along(ParamState& s, const Tensor& dir, const Strategy& st, double lr, double keep = 1.0);

 private:
  struct DeferredStep {
    ParamState* state;
    Tensor dir;
    double lr, keep;
  };
  void apply_deferred_steps();
  std::vector<DeferredStep> deferred_;
  std::string type_name_;
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<ParamState>> states_;
};

// Σx² of each tensor in double (torch's _foreach_norm, squared). CPU tensors: a loop each. Device tensors: one
// multi-tensor reduction per device (a few launches, core/cuda/reduce.cu) and one copy back for all of them.
std::vector<double> sums_of_squares(const std::vector<Tensor>& ts);

// ys[i] ← a·ys[i] + b·xs[i] for every i (xs empty: ys[i] ← a·ys[i]), in place (torch's _foreach_mul_ / lerp_).
// CPU tensors: a loop each; device tensors: a few multi-tensor launches per device and dtype; a strided y (a
// gradient of a view, say): tensor ops through the view.
void foreach_axpby_(const std::vector<Tensor>& ys, const std::vector<Tensor>& xs, double a, double b);

// Unnamed parameters get names "0", "1", … (state_dict keys).
NamedParams name_params(const std::vector<Tensor>& params);

}  // namespace liandan::optim
