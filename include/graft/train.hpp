#pragma once
// The training loop around graft's recipes: an exponential moving average of the weights
// (timm's ModelEmaV3) and gradient clipping per named param group (torch.nn.utils.clip_grad_*).
#include <graft/train/clip.hpp>
#include <graft/train/ema.hpp>
