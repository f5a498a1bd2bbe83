"""Every command-line flag with its help, defined in one function (the CLI layer only).

Names, defaults and allowed values are those of config.TrainConfig (one source for
the command line and the Python API); `config_from_flags` gives the frozen config.
"""

from absl import flags

from biwaa_tf import config

_DEFINED = []


def _enum(name, help_text):
  flags.DEFINE_enum(name, config.default(name), list(config.CHOICES[name]), help_text)


def _string(name, help_text):
  flags.DEFINE_string(name, config.default(name), help_text)


def _integer(name, help_text):
  flags.DEFINE_integer(name, config.default(name), help_text)


def _boolean(name, help_text):
  flags.DEFINE_boolean(name, config.default(name), help_text)


def _float(name, help_text):
  flags.DEFINE_float(name, config.default(name), help_text)


def define_flags():
  """Defines the flags once (idempotent)."""
  if _DEFINED:
    return
  _DEFINED.append(True)
  # Data.
  _string("source", "Labelled source domain: a list file ('relative/path label' a line) or a "
                    "class-subfolder directory.")
  _string("target", "Unlabelled target domain for training (list file or directory; labels, if "
                    "present, are used only to report accuracy and for --balanced_target=oracle).")
  _string("target_eval", "Target evaluation set; defaults to --target.")
  _string("data_root", "Directory the list files' paths are relative to.")
  _boolean("download", "Fetch the files of builtin:mnist_*/svhn_* datasets into --data_root "
                      "(checksummed, resumable); without it a missing file is an error naming "
                      "its URL.")
  _boolean("skip_invalid_images", "Drop missing, empty, truncated or non-image files (and report "
                                  "how many) instead of stopping.")
  _integer("resize_size", "Images are resized to this square size before cropping (default: 8/7 of "
                          "--image_size, rounded: 256 for 224 as in the paper, 32 for 28).")
  _integer("image_size", "Crop size fed to the backbone.")
  _enum("resize_method", "Resize filter: bicubic = PIL's default as the authors' torchvision "
                         "pipeline (antialiased, 8-bit values); bilinear = TensorFlow's bilinear "
                         "without antialiasing (this project's behaviour before 2026-11-30).")
  _enum("train_crop", "Training crop: resized = torchvision's RandomResizedCrop (area 8-100%, "
                      "aspect ratio 3/4-4/3, resized to --image_size), as the authors; random = a "
                      "plain random --image_size crop of the resized image. Default: resized for "
                      "the ResNets, random for lenet (digits would not survive 8% crops).")
  _boolean("random_flip", "Random horizontal flips in training.")
  _boolean("ten_crop", "Evaluate with 10 crops (4 corners + centre, and their flips), softmax "
                       "averaged, as the paper does.")
  _string("target_subsample", "Label-shift experiments on a labelled target: long_tail:R "
                              "keeps a fraction R^(-k/(K-1)) of class k's images (class 0 "
                              "all, the last 1/R; drawn with --seed), reverse_tail:R the "
                              "mirror image, step:R keeps 1/R of the second half of the "
                              "classes, partial:N leaves the last N classes out (partial-set "
                              "adaptation); the target evaluation list too when it is the "
                              "same list. none: the target as given.")
  _enum("balanced_target", "Target loader: auto = random in run 0 and balanced by the previous "
                           "runs' predictions after (BIWAA-I; always random with "
                           "--prior_matching); none = always random; pseudo = "
                           "balanced by predictions when there are any; oracle = balanced by the "
                           "true target labels (the paper's upper bound; ablation only).")
  _boolean("prior_matching", "For label-shifted targets (some classes far more frequent in "
                             "the target than others): from run 1 on, load the source in the "
                             "class proportions of run 0's target predictions and the target "
                             "at random, instead of loading the target class-balanced by "
                             "pseudo-labels (the paper). Recommended with "
                             "--first_run=source_only; see the README's label-shift table.")
  _enum("first_run", "adapt = run 0 adapts (the paper); source_only = run 0 trains on the "
                     "source alone and only seeds the later runs (their loaders and "
                     "bootstrap); use with --runs >= 2.")
  _boolean("label_shift_check", "Guard against label shift (the target's class proportions "
                                "differing from the source's), on by default for your data: "
                                "a source-only probe run first; if its predicted target class "
                                "proportions are far from the source's, the adapted runs start "
                                "from it (as --first_run=source_only), else the paper's runs are "
                                "trained unchanged. The training ends with a verdict (did "
                                "adaptation likely help?) against the probe. The benchmark "
                                "flagfiles turn it off (--nolabel_shift_check: the paper).")
  _float("label_shift_threshold", "The label-shift check finds a shift when the probe's "
                                  "predicted target class proportions are more than this "
                                  "total-variation distance from the source's (0: always take "
                                  "the label-shift path, 1: never, unless "
                                  "--label_shift_rare_share finds rare classes).")
  _float("label_shift_rare_share", "The label-shift check also finds a shift when the probe "
                                   "predicts its least-predicted 30% of the classes for less "
                                   "than this fraction of the share the source loads them in: "
                                   "absent or rare target classes (partial targets), which the "
                                   "total variation alone barely sees. 0 turns this test off.")
  _float("heldout_fraction", "The share of each source class kept out of training, labelled, "
                             "for calibration and the label-free estimates of the target's "
                             "class proportions and of each model's target accuracy (saved "
                             "as run_<r>/heldout_probs.npy). Default: 0.05 with the "
                             "label-shift check, 0 without it (all of the source trains).")
  # Model.
  _string("backbone", "Backbone: resnet50 (torchvision's ResNet-50 v1.5, the authors' network), "
                      "resnet50_keras (Keras' ResNet-50 v1 with Caffe weights), lenet (digits) "
                      "lenet_bn (lenet with batch norm on its features: the digits "
                      "benchmark) or lenet_tllib (tllib's digits LeNet: conv 20/50, dropout).")
  _string("backbone_weights", "imagenet (resnet50: torchvision's weights, fetched once through "
                              "huggingface_hub; resnet50_keras: Keras' download), none (random "
                              "init), or a weights file (resnet50: torchvision-format "
                              ".safetensors, or .pth with PyTorch installed; others: a Keras "
                              "weights file). Default: imagenet for the ResNets, none for lenet.")
  _integer("num_classes", "Number of classes; 0: one more than the source's largest label, and "
                          "then every class needs a source image (a label with gaps is refused as "
                          "a likely typo).")
  _enum("batch_norm", "Training forward pass: per_domain = source and target in two passes, each "
                      "batch norm layer normalising (and updating its running statistics with) "
                      "each domain's own statistics, as the authors' implementation; joint = one "
                      "pass over [source; target] (this project before 2026-11-30).")
  _integer("bottleneck_dim", "Width of the bottleneck features f.")
  _enum("heads", "Bottleneck, classifier and discriminator: biwaa = the authors' (Linear "
                 "bottleneck, Xavier init, discriminator with dropout); tllib = tllib's "
                 "(bottleneck Linear + batch norm + ReLU, discriminator Linear-BN-ReLU x 2, "
                 "PyTorch's init; its digits network with --backbone=lenet_tllib "
                 "--batch_norm=joint).")
  # Method.
  _enum("method", "biwaa: weighting + centroid loss; dann: plain adversarial; source_only: no "
                  "adaptation.")
  _boolean("feature_weighting", "Backprop-induced feature weighting (default: on for biwaa, off "
                                "for dann). --method=dann --feature_weighting gives DANN+BG.")
  _boolean("ms_loss", "Moving-semantic centroid loss (default: on for biwaa, off for dann).")
  _float("weighting_factor", "lambda: scale of the L2-normalised feature weights.")
  _float("weighting_offset", "a: the discriminator sees f * (a + w) = a f + f * w, the "
                             "unweighted features beside the weighted ones (DANN's marginal "
                             "alignment added to the class-conditional one); 0 = the paper's "
                             "f * w. The digits configs use 1 (see the README's digits section).")
  _enum("loss_form", "implementation: L = CE + L_d + coeff (intra + st + tt) + ss with the ramp in "
                     "the reversal layer; paper: L = CE + s(i) L_d + s(i) L_MS.")
  _float("grl_ramp_steps", "Length of the reversal coefficient ramp 2/(1+exp(-10 i/len)) - 1.")
  _float("centroid_decay", "Moving centroid memory: C <- d C + (1-d) mean.")
  _integer("ms_warmup_steps", "The centroid loss starts at this step of each run (the memories "
                              "move from step 0); 0 = from the first step, as the authors. For "
                              "networks trained from scratch, whose first pseudo-labels are a "
                              "random network's (the digits configs).")
  _boolean("within_run_aggregation", "Aggregate each target sample's probabilities over its visits "
                                     "within a run.")
  _float("within_run_momentum", "Within-run aggregate: p_a <- m p + (1-m) p_a.")
  _boolean("across_run_aggregation", "Aggregate predictions of all earlier runs (else only the "
                                     "previous run's are used).")
  _float("across_run_decay", "Weight of each older run relative to the next newer one in the "
                             "across-run aggregate.")
  _integer("bootstrap_steps", "Bootstrap length j_t: in runs after the first, pseudo-labels mix in "
                              "the earlier runs' aggregate with weight 1-u(j); 0 disables.")
  _boolean("bootstrap_crop_sum", "With --ten_crop, the bootstrap mixes the earlier runs' "
                                 "predictions summed over the 10 crops (rows sum to 10, so they "
                                 "outweigh the current run's softmax for longer), as the authors' "
                                 "implementation; --nobootstrap_crop_sum: their mean (the paper's "
                                 "formula).")
  # Optimisation.
  _integer("batch_size", "Images per domain per step.")
  _boolean("balanced_source", "Load the source class-balanced (as the authors' implementation); "
                              "--nobalanced_source samples it uniformly (shuffled epochs), as most "
                              "other libraries do.")
  _integer("steps_per_run", "Training steps per run.")
  _integer("runs", "Iterative runs (BIWAA-I uses 10), each from the same initial weights, seed + "
                   "100 x run.")
  _float("lr", "Base learning rate of the inv schedule lr(i) = lr (1 + 0.001 i)^-0.75.")
  _float("head_lr_multiplier", "Learning-rate multiplier of the new layers (bottleneck, "
                               "classifier, discriminator).")
  _float("momentum", "SGD Nesterov momentum.")
  _float("weight_decay", "Coupled L2 weight decay added to every gradient (the reference's 5e-4 x "
                         "decay multiplier 2).")
  # Run control.
  _integer("seed", "Random seed; run r uses seed + 100 r.")
  _string("model_dir", "Output directory: flags, checkpoints, TensorBoard logs, predictions and "
                       "results.json.")
  _integer("checkpoint_every", "Save a checkpoint every this many steps.")
  _integer("eval_batch_size", "Batch size for evaluation.")
  _integer("log_every", "Write TensorBoard scalars every this many steps.")
  _boolean("overwrite", "Replace a model_dir that holds a training with different flags.")
  _boolean("deterministic", "The same bits for the same command, also under CPU load and across "
                            "kill and resume: TensorFlow op determinism and one inter-op thread "
                            "(independent ops of a step run one after another; each op still uses "
                            "all cores).")
  _boolean("progress", "Show training progress: a live bar in a terminal; in a log file or pipe, a "
                       "line (step, losses, images/s, ETA) at every tenth of a run and at least "
                       "once a minute.")
  # Scale-out and speed.
  _enum("distribution_strategy", "auto: MirroredStrategy over all local GPUs (or --cpu_replicas "
                                 "logical CPUs) when there are two or more, else one device; "
                                 "multi_worker_mirrored takes the cluster from TF_CONFIG. "
                                 "--batch_size stays the global batch per domain.")
  _integer("cpu_replicas", "Split the CPU into this many logical devices (to run and test "
                           "MirroredStrategy without GPUs).")
  _boolean("sync_batch_norm", "With several replicas, compute the backbone's batch-normalisation "
                              "statistics over the global batch (an all-reduce per layer), as one "
                              "device does; --nosync_batch_norm: each replica normalises its own "
                              "share.")
  _enum("mixed_precision", "Compute the backbone, bottleneck and discriminator in bfloat16 (GPUs "
                           "from Ampere on, TPUs, recent CPUs) or float16 (any CUDA GPU; with "
                           "dynamic loss scaling). Variables, the classifier, the weighting and "
                           "the losses stay float32.")
  _boolean("jit_compile", "Compile the training step with XLA (a GPU option: slower for ResNet-50 "
                          "on CPU).")
  _boolean("dry_run", "Run every check of a real training (flags, lists, image files, model_dir, "
                      "devices, backbone and its weights), print the plan and exit without "
                      "training or writing anything.")


def config_from_flags(fv=None):
  """The validated TrainConfig for parsed flag values `fv` (default: absl FLAGS)."""
  fv = fv or flags.FLAGS
  return config.resolve(config.TrainConfig(**{name: getattr(fv, name)
                                             for name in config.FIELDS}))
