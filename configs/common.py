"""Shared defaults of every pretraining config; task and data files change only what differs.

Defaults follow MAE's ViT-B recipe where the paper is silent (see README,
"Design choices"), and the paper where it speaks (one network, restoration by
a few gradient steps on the input, masking as the first pretext task).
"""
import ml_collections
from ml_collections import config_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_TRAIN_IMAGES = 1_281_167
TINY_IMAGENET_A_TRAIN_IMAGES = 50_500
TASKS = ("mask", "sort", "sr", "denoise", "color", "mix")  # Pretext tasks a config arg may name.
KNN_K = 20  # Neighbours that vote in every kNN evaluation (cosine similarity).
KNN_TEMPERATURE = 0.07  # Votes weigh exp(similarity / temperature).


def steps(epochs: float, num_images: int, batch_size: int) -> int:
  """Optimizer steps of `epochs` passes over `num_images` at `batch_size`."""
  return int(epochs * (num_images // batch_size))


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  """big_vision-style config argument 'key=value,key=value' over typed `defaults`.

  `configs/vit_b.py:task=sort` gives get_config('task=sort'); an unknown key or a value
  of the wrong type fails with one line naming the allowed keys.
  """
  values = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"config argument {item!r}: expected key=value with key in "
                       f"{sorted(defaults)}")
    values[key] = type(defaults[key])(value)
  if "task" in defaults and values.task not in TASKS:
    raise ValueError(f"config argument task={values.task!r}: must be one of {list(TASKS)}")
  return values


def get_pretraining_config() -> ml_collections.ConfigDict:
  """ImageNet-1K, ViT-B/16 at 224, masking; all fields documented inline."""
  c = ml_collections.ConfigDict()
  c.mode = "pretrain"  # What main.py runs (transfer configs: 'linear_probe', 'knn', 'finetune').
  c.method = "energy"  # Pretraining objective: 'energy' (this method) or 'mae' (the MAE baseline, configs/mae_*.py).
  c.seed = 0  # Seeds parameters, corruptions, restoration noise and data order.
  c.batch_size = 4096  # Global batch over all devices and hosts (MAE: 4096).
  c.grad_accum_steps = 1  # Micro-batches per optimizer step (a scan inside the step): activations of batch_size / grad_accum_steps images at a time.
  c.num_epochs = config_dict.placeholder(float)  # Training length in passes over data.train_split (steps from its size and batch_size); set this or num_train_steps, the other None.
  c.num_epochs = 100.  # 100 ImageNet epochs.
  c.num_train_steps = config_dict.placeholder(int)  # Training length in optimizer steps, when num_epochs is None.

  c.model = ml_collections.ConfigDict()
  c.model.variant = "B/16"  # '<Ti|S|M|B|L|H>/<patch size>', as in big_vision.
  c.model.width = config_dict.placeholder(int)  # Overrides the variant's width if set.
  c.model.depth = config_dict.placeholder(int)  # Overrides the variant's number of blocks.
  c.model.mlp_dim = config_dict.placeholder(int)  # Overrides the variant's MLP width.
  c.model.num_heads = config_dict.placeholder(int)  # Overrides the variant's heads.
  c.model.patch_size = config_dict.placeholder(int)  # Overrides the variant's patch size.
  c.model.posemb = "sincos2d"  # Position embedding: 'sincos2d' (fixed, MAE) or 'learn'.
  c.model.pool_type = "gap"  # Pooled feature for transfer: 'gap' (mean of the patch tokens) or 'token' (class token).
  c.model.class_token = config_dict.placeholder(bool)  # Prepend a learned class token; None = only with pool_type='token' (MAE's and timm's checkpoints have one).
  c.model.drop_path_rate = 0.0  # Stochastic depth at the last block (MAE pretrains without).
  c.model.compute_dtype = "bfloat16"  # Activations' dtype, 'bfloat16' or 'float32'; params stay float32.
  c.model.remat_blocks = False  # Recompute each block in the backward pass (less memory, ~1 more forward).

  c.energy = ml_collections.ConfigDict()
  c.energy.readout = "sq_norm"  # E(x) from last-block tokens h: 'sq_norm' = ½Σ_tokens mean_channels h², 'sq_norm_pooled' = the same of the token mean, 'sq_norm_residual' = the same of h − (patch + position embeddings), 'sq_norm_blocks' = the mean over blocks of the same of each block's output, 'projected_sq_norm' = the same of LN(h)·P, P a learned D×D energy head, 'reconstruction' = ½‖x − f(x)‖², f a linear patch read-out of LN(h).

  c.energy.tokens = "all"  # Tokens E sums over: 'all', or 'uncorrupted' (not wholly corrupted: masked patches are then restored through the visible tokens' outputs).

  c.restore = ml_collections.ConfigDict()
  c.restore.num_steps = 2  # K gradient steps on the input (the paper: "as few as one").
  c.restore.init_step_size = 5.0  # Initial α of every step (softplus keeps it positive); at init ∇ₓE has rms 0.03 (B/16) to 0.09 (Ti-sized), so the first step moves pixels by 0.15–0.5 std.
  c.restore.init_step_size_from_data = False  # Energy: at a fresh start, set every α so the first step moves the first batch's corrupted pixels by their RMS distance to the clean image (init_step_size then unused).
  c.restore.learn_step_size = True  # Learn one α per step; False keeps init_step_size.
  c.restore.step_size_lr_multiplier = 1.0  # Learning rate of the step sizes over the global one (one scalar under AdamW moves ≤ lr per step).
  c.restore.step_normalization = "none"  # 'none': x − α·∇ₓE; 'rms': x − α·∇ₓE/RMS(∇ₓE) per image (α in units of the pixels' std).
  c.restore.step_size_jitter = 0.0  # Training multiplies each image's α_k by U(1 − j, 1 + j), j this value (randomized step sizes, as Energy-Based Transformers); 0 = exact α.
  c.restore.langevin_noise_scale = 0.0  # σ of the Langevin term √(2α)·σ·ε; 0 = plain descent.
  c.restore.interstep_noise_scale = 0.0  # Training adds Gaussian noise of this many times the step's RMS (per image, corrupted region) to each step's output before the next step, which must pull it back (0.5: −1.2 fine-tuning, docs/experiments.md session 20); 0 = off.
  c.restore.update_region = "corrupted"  # Pixels restoration may move: 'corrupted' or 'all'.
  c.restore.remat = "nothing_saveable"  # Remat of each restoration step: 'none', 'nothing_saveable' (flat memory in K), 'dots_saveable'.
  c.restore.unroll_steps = False  # Unroll the K steps (XLA sees straight-line code; compile time grows with K).
  c.restore.second_order = "autodiff"  # Gradient through ∇ₓE: 'autodiff' or 'reverse_over_forward' (custom VJP of jvp_x E); same values.

  c.loss = ml_collections.ConfigDict()
  c.loss.target = "pixels"  # Energy: compare restored and clean images in 'pixels' (the fields below), 'hog', each patch's L2-normalized histograms of oriented gradients (MaskFeat; squared distance; type, norm_pix* and plain_pixel_tasks unused), or 'pixels_and_hog', the pixel loss plus hog_weight × the HOG one.
  c.loss.hog_cell_size = 4  # 'hog' and 'pixels_and_hog': cells of this many pixels square, summed into one histogram per channel; must divide the patch size.
  c.loss.hog_weight = 1.0  # 'pixels_and_hog': weight of the HOG term beside the pixel loss.
  c.loss.type = "mse"  # Pixel distance: 'mse' or 'smooth_l1' (Huber, β = 1).
  c.loss.region = "corrupted"  # Pixels the loss covers: 'corrupted' (as MAE) or 'all'.
  c.loss.steps = "all"  # Loss over 'all' restoration steps alike, the 'last' only, or 'increasing' weights k/Σk.
  c.loss.norm_pix = True  # Per-patch normalized pixels in the loss (MAE's norm_pix_loss); with stats 'own' it lifted energy/mask kNN / linear probe by ~2 points at 600 steps (docs/experiments.md, session 6).
  c.loss.norm_pix_stats = "own"  # Energy: normalize each side of the loss by its 'own' patch mean and std (shift- and scale-invariant) or both by the 'clean' patch's (weight 1/σ²; with eps 1e-6 the old norm_pix, −1.5 kNN). MAE ignores it.
  c.loss.norm_pix_cell_size = 0  # Energy: side in pixels of the square cells norm_pix standardizes one by one (a divisor of the patch size); 0 = the patch size (4 at patch 8: −0.8 fine-tuning, docs/experiments.md session 30).
  c.loss.norm_pix_eps = 0.05  # Energy: variance floor of the per-patch normalization (the median patch variance is 0.39 in normalized pixels; 0.2: −0.3 fine-tuning, docs/experiments.md session 31); MAE uses 1e-6.
  c.loss.plain_pixel_tasks = ("sr", "denoise", "color")  # Energy: tasks whose restorations the loss compares in plain pixels despite norm_pix: the whole-image tasks change mostly what standardized patches hide (+2.9 LP for 'mix'); () for the earlier loss.
  c.loss.energy_ranking_weight = 0.0  # Weight of softplus(E(clean) − E(x)) per token, x = corrupted and restored images; 0 = off.

  c.corruption = ml_collections.ConfigDict()
  c.corruption.name = "mask"  # Pretext task: 'mask', 'sort', 'sr', 'denoise', 'color', or 'mix' / 'compose' of several.
  c.corruption.clean_image_fraction = 0.0  # Energy, training only: this fraction of images stays uncorrupted (region kept, so descent and loss still cover it): clean images must be fixed points of the descent; 0 = off.
  c.corruption.mask = ml_collections.ConfigDict()
  c.corruption.mask.ratio = 0.75  # Fraction of patches masked (MAE: 0.75).
  c.corruption.mask.fill = "zeros"  # Masked pixels: 'zeros' (the mean colour), 'noise' (N(0,1), 2.6 points of kNN worse in docs/experiments.md), 'mean' (image mean) or 'learned' (a trained pixel patch; energy method only).
  c.corruption.mask.block_size = 1  # Mask square blocks of this many patches per side (1 = single patches); must divide the patch grid.
  c.corruption.sort = ml_collections.ConfigDict()
  c.corruption.sort.ratio = 0.5  # Fraction of patches that trade places (along one random cycle).
  c.corruption.sr = ml_collections.ConfigDict()
  c.corruption.sr.factors = (2, 4)  # Down-sampling factor, drawn per image.
  c.corruption.sr.down_method = "area"  # Down-sampling filter: 'area' (block mean), 'bilinear' or 'bicubic' (antialiased).
  c.corruption.sr.up_method = "bicubic"  # Up-sampling back to full size: 'nearest', 'bilinear' or 'bicubic'.
  c.corruption.denoise = ml_collections.ConfigDict()
  c.corruption.denoise.sigma_min = 0.05  # Smallest noise std, in [0, 1] pixel units.
  c.corruption.denoise.sigma_max = 0.3  # Largest noise std; σ is uniform in between, per image.
  c.corruption.color = ml_collections.ConfigDict()  # Colorization (grayscale input) has no options.
  c.corruption.mix = ml_collections.ConfigDict()
  c.corruption.mix.tasks = ("mask", "sort", "sr", "color")  # name='mix': one of these per image; denoising, which harms the features, left out (+1.1 kNN, +0.8 fine-tuning).
  c.corruption.mix.weights = (3., 1., 1., 1.)  # ...drawn with these relative weights: masking, which teaches the features, for half the images (3 in 7 before: +0.5 kNN over equal weights).
  c.corruption.compose = ml_collections.ConfigDict()
  c.corruption.compose.tasks = ("mask", "denoise")  # name='compose': all of these, in order, on every image.

  c.mae = ml_collections.ConfigDict()  # method='mae': MAE's decoder (mask ratio: corruption.mask.ratio; target: loss.norm_pix).
  c.mae.decoder_width = 512  # Decoder width (MAE: 512).
  c.mae.decoder_depth = 8  # Decoder blocks (MAE: 8).
  c.mae.decoder_num_heads = 16  # Decoder attention heads (MAE: 16).

  c.data = ml_collections.ConfigDict()
  c.data.source = "tfds"  # 'tfds' (a prepared TFDS data set) or 'dead_leaves' (procedural, offline).
  c.data.name = "imagenet2012"  # TFDS name, looked for under data_dir.
  c.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir; None means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  c.data.builder_dir = config_dict.placeholder(str)  # A prepared '<name>/<version>' folder; overrides name and data_dir.
  c.data.train_split = "train"  # Split read for pretraining (each process reads its own part).
  c.data.eval_split = "validation"  # Split of the fixed batch for restoration images and metrics.
  c.data.image_size = 224  # Square training resolution; must be divisible by the patch size.
  c.data.crop_min_scale = 0.2  # Smallest area fraction of random-resized-crop (MAE: 0.2).
  c.data.eval_crop_fraction = 0.875  # Centre crop of the eval images after resizing (224/256).
  c.data.shuffle_buffer = 10_000  # Examples in the tf.data shuffle buffer, per process.
  c.data.prefetch_batches = 2  # Batches prepared ahead by tf.data.
  c.data.checkpoint_iterator = False  # Save tf.data's iterator (with its shuffle buffer) in checkpoints for an exact resume.
  c.data.pixel_mean = IMAGENET_MEAN  # Per-channel mean of [0, 1] pixels.
  c.data.pixel_std = IMAGENET_STD  # Per-channel std of [0, 1] pixels.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate_per_256 = 1.5e-4  # Peak AdamW learning rate for a batch of 256, scaled linearly (MAE).
  c.optimizer.warmup_epochs = config_dict.placeholder(float)  # Linear warm-up in epochs, then cosine decay to 0; set this or warmup_steps, the other None.
  c.optimizer.warmup_epochs = 10.  # 10 epochs (MAE).
  c.optimizer.warmup_steps = config_dict.placeholder(int)  # Warm-up in optimizer steps, when warmup_epochs is None.
  c.optimizer.b1 = 0.9  # AdamW β1.
  c.optimizer.b2 = 0.95  # AdamW β2 (MAE).
  c.optimizer.mu_dtype = "float32"  # AdamW's first moment: 'float32' or 'bfloat16' (2 bytes less per parameter).
  c.optimizer.weight_decay = 0.05  # Decoupled weight decay on weight matrices only.
  c.optimizer.grad_clip_norm = 1.0  # Clip the global gradient norm; 0 disables.
  c.ema_decay = 0.0  # Keep a (debiased) EMA of the parameters with this decay per step, which evaluations, transfer and export read; 0 = none.

  c.viewer = ml_collections.ConfigDict()  # main.py --mode=restore: restorations of a checkpoint.
  c.viewer.source = "tfds"  # Images to restore: 'tfds' or 'dead_leaves'.
  c.viewer.name = "imagenet_samples"  # TFDS data set (1000 real ImageNet photos in ../shared).
  c.viewer.data_dir = "../shared/data/tfds"  # Its TFDS data_dir (relative to the repository root).
  c.viewer.split = "test"  # Split whose first images are restored.
  c.viewer.num_images = 64  # Images the metrics average over.
  c.viewer.num_grid_images = 8  # Images shown in each task's grid.
  c.viewer.tasks = ("mask", "sort", "sr", "denoise", "color")  # Tasks shown and measured.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Devices on the data-parallel axis (batch split, params replicated); -1 = the rest.
  c.mesh.fsdp = 1  # Devices on the FSDP axis (batch and weight matrices split, ZeRO-3); -1 = the rest.
  c.mesh.tensor = 1  # Devices on the tensor-parallel axis (MLP and attention heads split); -1 = the rest.

  c.log_every_steps = 100  # Scalars to TensorBoard and the console.
  c.image_every_steps = 2000  # Restoration grid PNGs and held-out metrics.
  c.eval_tasks = ("mask", "sort", "sr", "denoise", "color")  # Tasks measured on the held-out batch.

  c.knn_monitor = ml_collections.ConfigDict()  # kNN top-1 of the backbone while pretraining.
  c.knn_monitor.every_steps = 0  # 0 disables; needs a labeled TFDS source.
  c.knn_monitor.num_train_examples = 5000  # Labeled train examples in the kNN memory bank.
  c.knn_monitor.num_eval_examples = 1000  # Eval-split examples classified.
  c.knn_monitor.k = KNN_K  # Neighbours that vote (cosine similarity).
  c.knn_monitor.temperature = KNN_TEMPERATURE  # Votes weigh exp(similarity / temperature).
  c.num_grid_images = 8  # Held-out images in the restoration grid.
  c.checkpoint_every_steps = 1000  # Orbax checkpoint interval.
  c.time_budget_seconds = 0.0  # Stop with a checkpoint after this much training (clock starts after compilation); 0 = no limit.
  c.stop_after_steps = 0  # Stop with a checkpoint after this step while the schedule still spans num_train_steps (equal-step comparisons on machines of any speed); 0 = no limit.
  c.max_checkpoints_to_keep = 3  # Older checkpoints are deleted.
  c.async_checkpointing = True  # Write checkpoints in the background.
  c.resume_override = False  # Resume even if fields the checkpoints depend on (model, objective, ...) differ from the workdir's config.json.
  return c


def get_transfer_config() -> ml_collections.ConfigDict:
  """Shared defaults of transfer runs (kNN, linear probe, fine-tuning) on ImageNet at 224."""
  c = get_pretraining_config()
  for pretraining_only in ("method", "energy", "restore", "loss", "corruption", "mae", "viewer",
                           "eval_tasks", "image_every_steps", "num_grid_images", "knn_monitor",
                           "time_budget_seconds", "stop_after_steps", "ema_decay"):
    del c[pretraining_only]
  c.mode = "linear_probe"  # What main.py runs: 'linear_probe' / 'knn' (frozen features) or 'finetune'.
  c.pretrained = config_dict.placeholder(str)  # Pretraining workdir (its latest checkpoint) or checkpoints/<step>; None = random init.
  c.batch_size = 1024  # Global batch of feature extraction and of training.
  c.data.crop_min_scale = 0.08  # Supervised random-resized-crop (MAE fine-tuning).

  c.frozen = ml_collections.ConfigDict()  # Frozen-feature evaluation.
  c.frozen.fast = True  # Linear probe on features extracted once (True), or trained on augmented images like fine-tuning (False).
  c.frozen.methods = ("knn", "linear_probe")  # Which of 'knn' and 'linear_probe' to run.
  c.frozen.num_train_examples = 0  # Train examples whose features are used; 0 = the whole split.
  c.frozen.num_eval_examples = 0  # Eval examples; 0 = the whole split.
  c.frozen.knn_k = KNN_K  # Neighbours that vote (cosine similarity).
  c.frozen.knn_temperature = KNN_TEMPERATURE  # Votes weigh exp(similarity / temperature).
  c.frozen.knn_per_block = False  # Also kNN on each block's pooled tokens (knn/top1_block<i>), from the same forward pass.
  c.frozen.probe_epochs = 90  # Epochs of the linear classifier on the fixed features (MAE: 90).
  c.frozen.probe_batch_size = 1024  # Its batch size.
  c.frozen.probe_learning_rate = 1e-3  # Its peak AdamW learning rate (cosine decay).
  c.frozen.probe_weight_decay = 0.0  # Its weight decay (MAE's linear probe: 0).

  c.finetune = ml_collections.ConfigDict()  # mode='finetune' (MAE's ViT-B recipe).
  c.finetune.layer_decay = 0.65  # Learning rate of layer l scaled by layer_decay^(depth+1−l).
  c.finetune.drop_path_rate = 0.1  # Stochastic depth at the last block.
  c.finetune.label_smoothing = 0.1  # Mass spread uniformly over the classes.
  c.finetune.mixup_alpha = 0.8  # Beta(α, α) of mixup; 0 disables.
  c.finetune.cutmix_alpha = 1.0  # Beta(α, α) of cutmix; 0 disables.
  c.finetune.mix_switch_prob = 0.5  # Probability of cutmix rather than mixup per batch.
  c.finetune.eval_every_steps = 1000  # Top-1/top-5 on the whole eval split; best kept in best/.
  c.finetune.train_last_blocks = 0  # Train only the last n blocks, the final norm and the head (the rest frozen); 0 = all.
  c.finetune.head_only_fraction = 0.0  # Fraction of the steps at the start in which only the head learns (LP-FT); the rest then ramps up over the warm-up.
  c.num_epochs = 100.  # At batch 1024 (MAE ViT-B).
  c.optimizer.learning_rate_per_256 = 5e-4  # MAE's base learning rate for fine-tuning.
  c.optimizer.warmup_epochs = 5.  # MAE's fine-tuning warm-up.
  c.optimizer.b2 = 0.999  # AdamW β2 (MAE fine-tuning).
  c.optimizer.grad_clip_norm = 0.0  # MAE fine-tunes without clipping.
  return c


def set_steps(c: ml_collections.ConfigDict, num_train_steps: int, warmup_steps: int) -> None:
  """Sets the training length and warm-up in optimizer steps (clearing the epochs)."""
  c.num_epochs, c.optimizer.warmup_epochs = None, None
  c.num_train_steps, c.optimizer.warmup_steps = num_train_steps, warmup_steps


def tiny_model(c: ml_collections.ConfigDict, width: int = 64, depth: int = 2,
               patch_size: int = 4) -> None:
  """Shrinks `c` in place to a test-sized model and run (big_vision's 'runlocal')."""
  c.model.width, c.model.depth, c.model.num_heads = width, depth, 2
  c.model.mlp_dim, c.model.patch_size = 2 * width, patch_size
  c.model.compute_dtype = "float32"
  c.data.image_size = 16
  c.data.shuffle_buffer = 64
  c.batch_size = 8
  set_steps(c, num_train_steps=4, warmup_steps=1)
  c.log_every_steps = c.image_every_steps = c.checkpoint_every_steps = 2
  c.num_grid_images = 4
  c.async_checkpointing = False
