#pragma once
// Mixed precision: autocast scopes and gradient scaling, as torch.autocast and
// torch.amp.GradScaler.
#include <graft/amp/autocast.hpp>
#include <graft/amp/grad_scaler.hpp>
