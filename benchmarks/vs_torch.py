"""msp's meta-step against an independent PyTorch implementation of the same computation.

python benchmarks/vs_torch.py [--rounds=20] [--modes=second_order,first_order] [--ks=1,3]

The setting is `benchmarks/meta_step.py`'s: the teacher–student network (3 sparsified 3×3 ConvNorm layers of 32
channels, 4 regression heads), 16² inputs, E = 4 episodes of 8 support + 8 query examples, the default optimisers.
The PyTorch step is written here from the method (docs/method.md), not from msp's code: per episode, K inner SGD
steps on the support loss, each followed by the group-lasso prox at threshold α·λ_ℓ·w_ℓ (the largest group of each
layer exempt); the query loss at the adapted weights; the mean over episodes differentiated into θ, φ and ρ
(second order: through the inner gradients; first order: inner gradients as constants); SGD with momentum on θ, φ,
Adam on ρ, ρ clipped to the λ bounds, the outer prox. BatchNorm normalises with batch statistics; the running
averages follow the query forwards. Both start from msp's initial weights and see the same episodes.

1. Checks the two agree: outer loss, gradients of ρ and of one kernel (relative error printed), and the loss after
   two steps.
2. Times them interleaved in one process (2 threads each, `--rounds` rounds of one step each, medians), for every
   mode × K: msp, PyTorch eager, and torch.compile of the network's forward (double backward through compiled
   graphs is not supported by torch.compile; where it fails the row says so).
3. Time to first step (a fresh process: imports, building, compiling, one step; msp both without and with the
   persistent compilation cache) and peak resident memory after 10 steps, each in its own subprocess.
"""
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from msp import cli  # absl only: the torch role imports no jax

_ROUNDS = flags.DEFINE_integer("rounds", 20, "Timed rounds (one step of each implementation per round).")
_MODES = flags.DEFINE_list("modes", ["second_order", "first_order"], "Meta-gradient modes.")
_KS = flags.DEFINE_list("ks", ["1", "3"], "Inner-step counts K.")
_ROLE = flags.DEFINE_enum("role", "main", ["main", "msp", "torch"],
                          "Internal: run one implementation alone for time-to-first-step and peak memory.")
_MODE = flags.DEFINE_string("mode", "second_order", "Internal (--role=msp/torch): the mode.")
_K = flags.DEFINE_integer("k", 1, "Internal (--role=msp/torch): K.")
_INPUTS = flags.DEFINE_string("inputs", None, "Internal (--role=torch): pickled `reference_inputs`.")

STARTED = time.time()
THREADS = 2


def msp_setup(mode: str, k: int, image_size: int = 16, episodes: int = 4):
  """(learner, initial state, meta-batch as numpy) for the benchmark setting."""
  import jax  # pylint: disable=import-outside-toplevel
  from data_pipelines.teacher_student import TeacherStudent  # pylint: disable=import-outside-toplevel
  from experiments.configs import teacher_student  # pylint: disable=import-outside-toplevel
  from msp.train import build_meta_learner  # pylint: disable=import-outside-toplevel
  config = teacher_student.get_config()
  config.image_size, config.meta.episodes = image_size, episodes
  config.meta.mode, config.meta.inner_steps = mode, k
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size,
                        config.teacher.alive_per_layer, seed=config.teacher.seed)
  m = config.meta
  batch = data.meta_batch(np.random.default_rng(0), m.episodes, m.support_size, m.query_size, m.task_sampling)
  return learner, learner.init_state(jax.random.key(0)), batch


class TorchMetaStep:
  """The same meta-step in PyTorch, functional: weights are a dict of tensors, NCHW activations, OIHW kernels."""

  def __init__(self, inputs: dict, compile_forward: bool = False):
    import torch  # pylint: disable=import-outside-toplevel
    self.torch = torch
    setting, params, batch = inputs["setting"], inputs["params"], inputs["batch"]
    self.mode, self.k = setting["mode"], setting["k"]
    self.inner_lr, self.outer_lr, self.rho_lr = setting["inner_lr"], setting["outer_lr"], setting["rho_lr"]
    self.min_alive = setting["min_alive"]
    self.log_bounds = (np.log(setting["lambda_min"]), np.log(setting["lambda_max"]))
    self.tasks = setting["tasks"]
    self.layers = ["stage0_conv1"] + [f"stage{s + 1}_block0/conv1" for s in range(len(setting["strides"]))]
    self.strides = [1] + setting["strides"]
    to = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
    w = {}
    for name in self.layers:
      module = params["backbone"]
      for part in name.split("/"):
        module = module[part]
      w[f"{name}.kernel"] = to(module["conv"]["kernel"]).permute(3, 2, 0, 1).contiguous()
      w[f"{name}.scale"], w[f"{name}.bias"] = to(module["norm"]["scale"]), to(module["norm"]["bias"])
    for t in self.tasks:
      head = params[f"head_{t}"]
      w[f"{t}.conv.kernel"] = to(head["conv"]["kernel"]).permute(3, 2, 0, 1).contiguous()
      w[f"{t}.conv.bias"] = to(head["conv"]["bias"])
      w[f"{t}.out.kernel"] = to(head["out"]["kernel"]).permute(3, 2, 0, 1).contiguous()
      w[f"{t}.out.bias"] = to(head["out"]["bias"])
    self.weights = {n: v.requires_grad_() for n, v in w.items()}
    self.rho = to(inputs["rho"]).requires_grad_()
    # group weights w_ℓ = sqrt(|g|): kernel entries of one output channel plus its BatchNorm scale and bias
    self.group_weights = [float(np.sqrt(w[f"{n}.kernel"][0].numel() + 2)) for n in self.layers]
    self.running = {n: (torch.zeros(w[f"{n}.scale"].shape), torch.ones(w[f"{n}.scale"].shape)) for n in self.layers}
    nchw = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32).permute(0, 1, 4, 2, 3).contiguous()
    self.support = {key: nchw(v) for key, v in batch["support"].items()}
    self.query = {key: nchw(v) for key, v in batch["query"].items()}
    self.masks = torch.tensor(batch["task_mask"])
    self.momentum = {n: torch.zeros_like(v) for n, v in w.items()}
    self.adam = (torch.zeros_like(self.rho), torch.zeros_like(self.rho), 0)
    self.forward = torch.compile(self._forward, dynamic=False) if compile_forward else self._forward

  def _forward(self, w, images):
    """(B, 3, H, W) → ({task: (B, 1, H, W)}, [(batch mean, batch variance) per layer])."""
    functional = self.torch.nn.functional
    x, stats = images, []
    for name, stride in zip(self.layers, self.strides):
      x = functional.conv2d(x, w[f"{name}.kernel"], stride=stride, padding=1)
      mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
      stats.append((mean.detach(), var.detach()))
      x = (x - mean[:, None, None]) / self.torch.sqrt(var[:, None, None] + 1e-5)
      x = functional.relu(x * w[f"{name}.scale"][:, None, None] + w[f"{name}.bias"][:, None, None])
    outputs = {}
    for t in self.tasks:
      h = functional.relu(functional.conv2d(x, w[f"{t}.conv.kernel"], w[f"{t}.conv.bias"], padding=1))
      outputs[t] = functional.conv2d(h, w[f"{t}.out.kernel"], w[f"{t}.out.bias"])
    return outputs, stats

  def loss(self, w, batch, e, mask):
    outputs, stats = self.forward(w, batch["image"][e])
    per_task = self.torch.stack([((outputs[t] - batch[t][e]) ** 2).mean() for t in self.tasks])
    return (mask * per_task).sum(), stats

  def prox(self, w, thresholds):
    """Block soft-threshold of every sparsified layer's output channels; the largest group of each is exempt."""
    torch = self.torch
    w = dict(w)
    for name, tau in zip(self.layers, thresholds):
      kernel, scale, bias = w[f"{name}.kernel"], w[f"{name}.scale"], w[f"{name}.bias"]
      squared = (kernel ** 2).sum((1, 2, 3)) + scale ** 2 + bias ** 2
      alive = squared > tau ** 2
      norms = torch.sqrt(torch.where(alive, squared, torch.ones_like(squared)))
      factors = torch.where(alive, 1 - tau / norms, torch.zeros_like(norms))
      if self.min_alive:
        largest = squared >= torch.topk(squared.detach(), self.min_alive).values[-1]
        factors = torch.where(largest, torch.ones_like(factors), factors)
      w[f"{name}.kernel"] = kernel * factors[:, None, None, None]
      w[f"{name}.scale"], w[f"{name}.bias"] = scale * factors, bias * factors
    return w

  def thresholds(self, step_size: float, rho) -> list:
    """Per sparsified layer, the prox threshold step_size·λ_ℓ·w_ℓ with λ = exp(ρ)."""
    return [step_size * lam * weight for lam, weight in zip(self.torch.exp(rho), self.group_weights)]

  def outer_loss(self):
    """(mean query loss over episodes, per-layer batch statistics of every query forward)."""
    torch = self.torch
    thresholds = self.thresholds(self.inner_lr, self.rho)
    total, query_stats = 0.0, []
    for e in range(self.masks.shape[0]):
      mask, fast = self.masks[e], self.weights
      for _ in range(self.k):
        support_loss, _ = self.loss(fast, self.support, e, mask)
        grads = torch.autograd.grad(support_loss, list(fast.values()), create_graph=self.mode == "second_order")
        fast = self.prox({n: fast[n] - self.inner_lr * g for n, g in zip(fast, grads)}, thresholds)
      query_loss, stats = self.loss(fast, self.query, e, mask)
      total = total + query_loss
      query_stats.append(stats)
    return total / self.masks.shape[0], query_stats

  def gradients(self):
    """(outer loss, {name: gradient}, gradient of ρ)."""
    loss, _ = self.outer_loss()
    grads = self.torch.autograd.grad(loss, [*self.weights.values(), self.rho])
    return float(loss.detach()), dict(zip(self.weights, grads[:-1])), grads[-1]

  def step(self) -> float:
    """One outer step in place; returns the outer loss before it."""
    torch = self.torch
    loss, query_stats = self.outer_loss()
    grads = torch.autograd.grad(loss, [*self.weights.values(), self.rho])
    with torch.no_grad():
      updated = {}
      for (name, weight), grad in zip(self.weights.items(), grads):
        self.momentum[name] = grad + 0.9 * self.momentum[name]
        updated[name] = weight - self.outer_lr * self.momentum[name]
      first, second, count = self.adam
      grad_rho, count = grads[-1], count + 1
      first, second = 0.9 * first + 0.1 * grad_rho, 0.999 * second + 0.001 * grad_rho ** 2
      step = self.rho_lr * (first / (1 - 0.9 ** count)) / (torch.sqrt(second / (1 - 0.999 ** count)) + 1e-8)
      self.adam = (first, second, count)
      rho = torch.clamp(self.rho - step, *self.log_bounds)
      updated = self.prox(updated, self.thresholds(self.outer_lr, rho))
      for i, name in enumerate(self.layers):
        mean = sum(s[i][0] for s in query_stats) / len(query_stats)
        var = sum(s[i][1] for s in query_stats) / len(query_stats)
        running_mean, running_var = self.running[name]
        self.running[name] = (0.9 * running_mean + 0.1 * mean, 0.9 * running_var + 0.1 * var)
    self.weights = {n: v.requires_grad_() for n, v in updated.items()}
    self.rho = rho.requires_grad_()
    return float(loss.detach())


def reference_inputs(learner, state, batch) -> dict:
  """What the PyTorch reference needs, as numpy arrays and plain values: the setting, msp's initial weights and ρ,
  the meta-batch."""
  import jax  # pylint: disable=import-outside-toplevel
  config = learner.config
  backbone = config.model.backbone
  if backbone.block != "plain" or backbone.stem != "simple" or config.optim.name != "sgd":
    raise ValueError("the PyTorch reference implements the teacher–student network (plain blocks, simple stem) "
                     "with msp's `sgd` outer optimiser (momentum 0.9)")
  setting = dict(mode=config.meta.mode, k=config.meta.inner_steps, inner_lr=config.meta.inner_lr,
                 outer_lr=config.optim.lr, rho_lr=config.optim.rho_lr, min_alive=config.safeguards.min_channels,
                 lambda_min=config.safeguards.lambda_min, lambda_max=config.safeguards.lambda_max,
                 tasks=list(config.seen_tasks), strides=list(backbone.strides))
  numpy = lambda tree: jax.tree.map(np.asarray, tree)
  return {"setting": setting, "params": numpy(state.params), "rho": np.asarray(state.rho),
          "batch": {"support": numpy(batch.support), "query": numpy(batch.query),
                    "task_mask": np.asarray(batch.task_mask)}}


def msp_gradients(learner, state, batch):
  """(outer loss, {path: gradient}, gradient of ρ) of msp's objective, summed then averaged over episodes."""
  import jax  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from msp.meta import sum_over_episodes  # pylint: disable=import-outside-toplevel
  sums = jax.jit(lambda p, r, s, b: sum_over_episodes(learner.objective, p, r, s, b))(
      state.params, state.rho, state.batch_stats, batch)
  e = batch.task_mask.shape[0]
  grads = {"/".join(k): np.asarray(v) / e for k, v in traverse_util.flatten_dict(sums["grad_params"]).items()}
  return float(sums["loss"]) / e, grads, np.asarray(sums["grad_log_lambdas"]) / e


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def agreement(mode: str, k: int, **setting) -> dict[str, float]:
  """msp against the PyTorch reference from the same weights and episodes: outer losses, relative errors of the
  gradients of ρ and of one kernel, and the outer losses of the second step."""
  learner, state, batch = msp_setup(mode, k, **setting)
  reference = TorchMetaStep(reference_inputs(learner, state, batch))
  loss, grads, grad_rho = msp_gradients(learner, state, batch)
  torch_loss, torch_grads, torch_grad_rho = reference.gradients()
  kernel = grads["backbone/stage1_block0/conv1/conv/kernel"].transpose(3, 2, 0, 1)
  kernel_error = relative_error(torch_grads["stage1_block0/conv1.kernel"].numpy(), kernel)
  msp_losses, torch_losses = [], []
  for _ in range(2):
    state, metrics = learner.train_step(state, batch)
    msp_losses.append(float(metrics["loss"]))
    torch_losses.append(reference.step())
  return {"loss": loss, "torch_loss": torch_loss, "rho_error": relative_error(torch_grad_rho.numpy(), grad_rho),
          "kernel_error": kernel_error, "second_loss": msp_losses[1], "torch_second_loss": torch_losses[1]}


def timings(mode: str, k: int, rounds: int) -> dict[str, float | None]:
  """Median ms per step of msp, PyTorch eager and PyTorch with a compiled forward, interleaved round by round."""
  import jax  # pylint: disable=import-outside-toplevel
  learner, state, batch = msp_setup(mode, k)
  step = learner.train_step.lower(state, batch).compile()
  holder = [state]

  def msp_step():
    holder[0], metrics = step(holder[0], batch)
    jax.block_until_ready(metrics)

  inputs = reference_inputs(learner, state, batch)
  runners = {"msp": msp_step, "torch eager": TorchMetaStep(inputs).step}
  try:
    compiled = TorchMetaStep(inputs, compile_forward=True)
    compiled.step()
    runners["torch.compile"] = compiled.step
  except Exception as error:  # pylint: disable=broad-except
    print(f"  torch.compile, {mode} K={k}: not measured ({type(error).__name__}: {str(error).splitlines()[0][:100]})")
  times = {name: [] for name in runners}
  for run in runners.values():
    run()  # warm-up
  for _ in range(rounds):
    for name, run in runners.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def alone(role: str, mode: str, k: int, inputs_file: str) -> None:
  """Subprocess body: seconds from process start to the end of the first step, then peak resident memory after
  10 steps. The PyTorch process reads msp's weights and episodes from `inputs_file` and never imports JAX."""
  if role == "msp":
    import jax  # pylint: disable=import-outside-toplevel
    learner, state, batch = msp_setup(mode, k)
    step = lambda state: learner.train_step(state, batch)
  else:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(THREADS)
    with open(inputs_file, "rb") as f:
      reference = TorchMetaStep(pickle.load(f))
    state, step = None, lambda state: (None, reference.step())
  for i in range(10):
    state, metrics = step(state)
    if role == "msp":
      jax.block_until_ready(metrics)
    if i == 0:
      first = time.time() - STARTED
  print(f"first_step_s={first:.2f} peak_rss_mb={peak_rss_mb():.0f}")


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
  with open("/proc/self/status", encoding="ascii") as f:
    line = next(l for l in f if l.startswith("VmHWM:"))
  return int(line.split()[1]) / 1024


def run_alone(role: str, mode: str, k: int, cache_dir: str | None, inputs_file: str) -> dict[str, float]:
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
  out = subprocess.run([sys.executable, __file__, f"--role={role}", f"--mode={mode}", f"--k={k}",
                        f"--inputs={inputs_file}"], env=env, capture_output=True, text=True, check=True).stdout
  line = [l for l in out.splitlines() if l.startswith("first_step_s=")][-1]
  return {key: float(value) for key, value in (item.split("=") for item in line.split())}


def main(argv):
  del argv
  if _ROLE.value != "main":
    alone(_ROLE.value, _MODE.value, _K.value, _INPUTS.value)
    return
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks.common import machine  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(THREADS)
  rows = [(mode, int(k)) for mode in _MODES.value for k in _KS.value]
  print(f"Machine: {machine()}; torch {torch.__version__} ({THREADS} threads)")
  print("Setting: teacher–student net, 16² inputs, E = 4 episodes × (8 support + 8 query), 4 tasks\n")
  print("| mode | K | outer loss msp / torch | ρ-gradient rel. error | kernel-gradient rel. error "
        "| loss after 2 steps msp / torch |")
  print("| --- | --- | --- | --- | --- | --- |")
  for mode, k in rows:
    a = agreement(mode, k)
    print(f"| {mode} | {k} | {a['loss']:.7f} / {a['torch_loss']:.7f} | {a['rho_error']:.1e} | {a['kernel_error']:.1e} "
          f"| {a['second_loss']:.7f} / {a['torch_second_loss']:.7f} |", flush=True)
  print(f"\n| mode | K | msp (ms) | torch eager (ms) | torch.compile (ms) | msp speed ÷ eager | msp speed ÷ compile |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for mode, k in rows:
    t = timings(mode, k, _ROUNDS.value)
    eager, compiled = t["torch eager"], t.get("torch.compile")
    compiled_ms = "n/a" if compiled is None else f"{compiled:.0f}"
    compiled_ratio = "n/a" if compiled is None else f"{compiled / t['msp']:.2f}×"
    print(f"| {mode} | {k} | {t['msp']:.0f} | {eager:.0f} | {compiled_ms} | {eager / t['msp']:.2f}× | "
          f"{compiled_ratio} |", flush=True)
  mode, k = rows[0]
  print(f"\nTime to first step and peak memory ({mode}, K={k}; fresh processes, imports included):\n")
  print("| implementation | first step (s) | peak RSS after 10 steps (MB) |")
  print("| --- | --- | --- |")
  with tempfile.TemporaryDirectory() as tmp:
    inputs_file = os.path.join(tmp, "inputs.pkl")
    with open(inputs_file, "wb") as f:
      pickle.dump(reference_inputs(*msp_setup(mode, k)), f)
    cache = os.path.join(tmp, "jax_cache")
    for label, role, cache_dir in (("msp, empty compilation cache", "msp", cache),
                                   ("msp, compilation cache filled by the run above", "msp", cache),
                                   ("torch eager", "torch", None)):
      r = run_alone(role, mode, k, cache_dir, inputs_file)
      print(f"| {label} | {r['first_step_s']:.1f} | {r['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
