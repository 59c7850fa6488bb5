#pragma once
// graft's distributed layer over PyTorch's c10d (ProcessGroupGloo on CPU, NCCL on GPUs):
// process groups with timeouts, broadcast and verification of a model's tensors, gradient
// averaging of exactly the trainable parameters, and rank-aware checkpoints. Not included by
// graft/graft.hpp: it pulls in c10d's headers (and, through ProcessGroupGloo.hpp, Gloo's:
// libgloo-dev on Debian). Link graft::graft (or graft::compiled) as usual: libtorch's own CMake
// target defines USE_C10D_GLOO and links Gloo.
#include <graft/distributed/group.hpp>
#include <graft/distributed/agree.hpp>
#include <graft/distributed/broadcast.hpp>
#include <graft/distributed/gradients.hpp>
#include <graft/distributed/checkpoint.hpp>
#include <graft/distributed/launch.hpp>
