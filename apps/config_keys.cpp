#include "apps/config_keys.h"

#include "core/error.h"

namespace liandan::apps {

const std::map<std::string, std::string>& key_meanings() {
  static const std::map<std::string, std::string> m = {
      // the run
      {"task", "what to train: lm, spirals, toy2d, ddpm, vit, mnist_cnn, image_cls, text_cls, multilabel, nxm"},
      {"seed", "seed of the weights' initialisation, the data order and every random draw of the run"},
      {"steps", "optimizer steps to train"},
      {"threads", "CPU threads (0: OpenMP's default, the machine's cores)"},
      {"log_every", "steps between log lines and metrics.jsonl records"},
      {"eval_every", "steps between held-out evaluations (and best-checkpoint updates); one runs at the end too"},
      {"checkpoint_every", "steps between checkpoints (one is written at the end and on SIGINT/SIGTERM too)"},
      {"keep_checkpoints", "how many ckpt-<step> files to keep besides last and best"},
      {"batch_size", "examples per optimizer step (the global batch: data-parallel ranks split it)"},
      {"data_dir", "where scripts/get-data put the downloaded data sets (MNIST under DIR/mnist)"},
      {"device", "cpu, cuda (cuda:LOCAL_RANK under mpirun) or cuda:N"},
      {"precision", "f32, or mixed precision with bf16 or f16 matrix products (f32 weights; f16 adds loss scaling)"},
      {"log.tensorboard", "also write TensorBoard event files into RUN_DIR/tensorboard"},
      // data
      {"data.corpus", "lm: the text, `fortunes`, `embedded`, or a path to a file or folder of text files"},
      {"data.mode", "tokens: bytes (256 symbols) or chars (the corpus's Unicode characters)"},
      {"data.tokenizer", "lm, text_cls: a byte-level BPE file from `liandan tokenizer train` (empty: data.mode's tokens)"},
      {"data.max_bytes", "lm: read at most this many bytes of the corpus (0: all)"},
      {"data.val_fraction", "lm: the share of the corpus (its end) held out for evaluation"},
      {"data.seq_len", "lm: tokens per training window"},
      {"data.max_len", "text_cls: tokens per example (longer texts are cut, shorter padded and masked)"},
      {"data.train", "training data: an IDX images file (.gz or not) or a folder with one sub-folder per class; "
                     "text_cls: a `label<TAB>text` file or a folder per class"},
      {"data.validation", "held-out data for evaluation (same formats as data.train; default: data.test)"},
      {"data.test", "test data (same formats as data.train), evaluated when data.validation is not given"},
      {"data.train_labels", "the IDX labels file of data.train (default: derived from its name)"},
      {"data.validation_labels", "the IDX labels file of data.validation (default: derived from its name)"},
      {"data.test_labels", "the IDX labels file of data.test (default: derived from its name)"},
      {"data.train_limit", "use only the first N training images (0: all)"},
      {"data.channels", "image channels: 0 (the data's own), 1 (gray) or 3 (RGB)"},
      {"data.image_size", "images are brought to this side length (0: the data's own; MNIST tasks: 28)"},
      {"data.fit", "how images reach data.image_size: resize (bilinear) or pad (centred, zeros)"},
      {"data.mean", "per-channel mean subtracted after scaling to [0, 1] (empty: none)"},
      {"data.std", "per-channel standard deviation divided by after the mean (empty: none)"},
      {"data.crop_padding", "augmentation: pad by this many pixels and crop back at a random offset (0: off)"},
      {"data.hflip", "augmentation: flip each training image left-right with probability 1/2"},
      {"data.dataset", "toy2d: the 2-D distribution, ring, grid, moons or swiss_roll"},
      {"data.noise", "spirals: Gaussian noise added to the points"},
      {"data.train_size", "generated training examples"},
      {"data.val_size", "generated held-out examples"},
      {"data.test_size", "generated test examples"},
      {"data.height", "multilabel/nxm: canvas height in pixels"},
      {"data.width", "multilabel/nxm: canvas width in pixels"},
      {"data.min_digits", "multilabel/nxm: fewest digits pasted on a canvas"},
      {"data.max_digits", "multilabel/nxm: most digits pasted on a canvas"},
      {"data.min_gap", "multilabel/nxm: least horizontal distance between digits in pixels"},
      {"data.imbalance", "multilabel/nxm: ratio of the most to the least frequent class (1: balanced)"},
      // model
      {"model.name", "image_cls: the classifier, mlp, cnn or vit"},
      {"model.d_model", "transformer width"},
      {"model.n_layers", "transformer blocks"},
      {"model.n_heads", "attention heads (must divide model.d_model)"},
      {"model.d_ff", "feed-forward width (default: 4 model.d_model)"},
      {"model.dropout", "dropout probability in the transformer blocks"},
      {"model.position", "position encoding; lm: rope, sinusoidal, learned or none; vit: rope2d, rope1d, learned or none"},
      {"model.rope_base", "RoPE's base θ: frequencies θ^(-2i/d)"},
      {"model.attention", "lm: softmax attention, or linear (RoPE in linear attention)"},
      {"model.patch", "vit: patch side in pixels (must divide the image size)"},
      {"model.hidden", "MLP hidden widths (spirals, toy2d: one width; image_cls mlp: a list)"},
      {"model.layers", "spirals: hidden layers of the MLP"},
      {"model.blocks", "toy2d: residual blocks of the MLP denoiser"},
      {"model.time_dim", "toy2d: width of the time embedding"},
      {"model.base_channels", "ddpm: U-Net channels at full resolution"},
      {"model.channel_mult", "ddpm: channel multiplier per U-Net resolution (one entry per level)"},
      {"model.num_res_blocks", "ddpm: residual blocks per U-Net level"},
      {"model.groups", "ddpm: GroupNorm groups (must divide every channel count)"},
      {"model.attention_resolutions", "ddpm: the feature-map sides that get self-attention"},
      {"model.mid_attention", "ddpm: self-attention in the U-Net's middle block"},
      // loss
      {"loss.name", "multilabel: zlpr, zlpr_soft or bce; nxm: nxm1, nxm3 or ce; text_cls: ce or zlpr (multi-label default)"},
      {"loss.soft", "ZLPR with soft labels (targets in [0, 1])"},
      // diffusion
      {"diffusion.process", "ddpm (discrete, Ho et al.), vp, subvp or ve (score SDEs, Song et al.)"},
      {"diffusion.prediction", "what the network predicts: eps, x0 or v"},
      {"diffusion.T", "discrete processes (ddpm): the number of diffusion steps T"},
      {"diffusion.beta_start", "ddpm: β of the first step of the linear schedule"},
      {"diffusion.beta_end", "ddpm: β of the last step of the linear schedule"},
      {"diffusion.beta_min", "vp/subvp: β(0) of the SDE"},
      {"diffusion.beta_max", "vp/subvp: β(1) of the SDE"},
      {"diffusion.sigma_min", "ve: smallest noise level σ"},
      {"diffusion.sigma_max", "ve: largest noise level σ"},
      {"diffusion.time_scale", "SDE processes: the network sees time as time_scale·t"},
      // evaluation
      {"eval.tokens", "lm: held-out tokens scored per evaluation"},
      {"eval.lengths", "lm: context lengths evaluated (longer than data.seq_len tests extrapolation)"},
      {"eval.canvas", "vit: also evaluate on larger canvases of these sides (RoPE-2D resolution transfer)"},
      {"eval.samplers", "diffusion: samplers scored per evaluation, e.g. [\"ddim:50\", \"ode_heun:30\"]"},
      {"eval.samples", "diffusion: samples drawn per sampler and evaluation"},
      {"eval.seed", "diffusion: the samplers' seed in evaluations (the same noise every time)"},
      {"eval.classifier", "ddpm: a mnist_cnn checkpoint whose features give the FID of samples"},
      // samples
      {"sample.prompt", "lm: the text generation starts from"},
      {"sample.length", "lm: tokens generated"},
      {"sample.temperature", "lm: softmax temperature of sampling"},
      {"sample.top_k", "lm: sample from the k most likely tokens (0: all)"},
      {"sample.seed", "lm: the sampling seed"},
      {"sample.sampler", "diffusion: the sampler of the sample grid, e.g. ddim:50, ddpm, pc:100"},
      {"sample.count", "diffusion: samples drawn for the grid"},
      {"sample.clip", "diffusion: clip the predicted x0 to the data range while sampling"},
      // optimizer
      {"optim.name", "adamw, adam, sgd or amos"},
      {"optim.lr", "learning rate (the schedule's peak)"},
      {"optim.weight_decay", "decoupled weight decay (AdamW) or L2 (Adam, SGD); biases and norms get none"},
      {"optim.beta1", "Adam/AdamW: first-moment decay"},
      {"optim.beta2", "Adam/AdamW: second-moment decay"},
      {"optim.eps", "Adam/AdamW: added to the root of the second moment"},
      {"optim.amsgrad", "Adam/AdamW: keep the running maximum of the second moment"},
      {"optim.momentum", "SGD (and Amos): momentum coefficient"},
      {"optim.nesterov", "SGD: Nesterov momentum"},
      {"optim.beta", "Amos: decay of the squared-gradient average"},
      {"optim.c_coef", "Amos: coefficient c of the adaptive learning-rate decay"},
      {"optim.d_coef", "Amos: coefficient d of the adaptive weight decay"},
      {"optim.extra_l2", "Amos: L2 regularisation added to its adaptive decay"},
      {"optim.clip_value", "clip each gradient element to [-v, v] before the step (0: off; Amos clips inside its update)"},
      {"optim.finetune_rate", "Amos: scale of the expected weight scale when fine-tuning"},
      {"optim.init_b", "Amos: initial value of its decay state b"},
      {"optim.factored", "Amos: factored (row/column) squared-gradient slots instead of one per element"},
      {"optim.eta_factor", "Amos: multiplies each matrix's expected scale η (its initial RMS)"},
      {"optim.per_tensor_lr", "Amos strategy: scale each tensor's learning rate by its update norm"},
      {"optim.tie_weight_decay", "Amos strategy: tie the weight decay to the learning rate (lr·wd constant)"},
      {"optim.q", "Amos strategy: exponent q of the per-tensor learning rate"},
      {"optim.schedule", "learning-rate schedule: constant, cosine, linear, step, inverse_square or inverse_time"},
      {"optim.warmup", "steps of linear warm-up before the schedule"},
      {"optim.min_factor", "cosine, linear: the final learning rate as a fraction of optim.lr"},
      {"optim.step_size", "step: steps between decays"},
      {"optim.gamma", "step: the decay factor"},
      {"optim.half_life", "inverse_square, inverse_time: steps until the rate halves (default: the steps after warm-up)"},
      {"optim.accumulate", "micro-batches whose gradients are summed per step (each of batch_size)"},
      {"optim.clip_norm", "clip the gradients to this global L2 norm (0: off)"},
      {"ema.decay", "keep an exponential moving average of the weights with this decay (0: off); evaluation and "
                    "samples use it"},
      {"ema.warmup", "EMA decay warm-up min(decay, (1 + n) / (10 + n))"},
      // data-parallel (docs/distributed.md)
      {"dist.backend", "auto (nccl for CUDA, mpi under mpirun, else single), mpi, nccl or single"},
      {"dist.bucket_mb", "gradient bucket size in MiB (all-reduces start as buckets fill during backward)"},
      {"dist.timeout", "seconds a collective may wait before every rank is aborted with the culprit named"},
      {"dist.find_unused_parameters", "allow parameters that get no gradient in a step"},
      {"dist.zero", "ZeRO-1: shard AdamW/Adam/SGD state over the processes"},
      {"dist.deterministic", "bit-identical weights on any power-of-two number of processes (fixed chunk tree)"},
      {"dist.chunks", "deterministic mode: the global batch in this many equal chunks (a power of two)"},
  };
  return m;
}

void check_known_keys(const Config& cfg) {
  const auto& known = key_meanings();
  for (const std::string& k : cfg.given_keys()) {
    if (known.count(k)) continue;
    std::vector<std::string> names;
    for (auto& [name, _] : known) names.push_back(name);
    std::string best = closest_key(k, names);
    LD_FAIL("config ", cfg.source(), ": unknown key '", k, "' (no task reads it; ",
            best.empty() ? std::string("`liandan config TASK` lists a task's keys") : "did you mean '" + best + "'?", ")");
  }
}

}  // namespace liandan::apps
