#pragma once
// The training loop around graft's recipes: an exponential moving average of the weights
// (timm's ModelEmaV3), gradient clipping per named param group (torch.nn.utils.clip_grad_*),
// the optimizer, scheduler and gradient scaler state in PyTorch's layouts, to continue a
// Python run in C++ and back, and a whole run saved and restored in one call.
#include <graft/train/checkpoint.hpp>
#include <graft/train/clip.hpp>
#include <graft/train/ema.hpp>
#include <graft/train/pytorch_state.hpp>
