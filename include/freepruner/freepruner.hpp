#pragma once
/// \file freepruner.hpp
/// The core, for host code: views, options, `select` on attention maps
/// (CPU backend), `select` on queries and keys, the streaming `pruner`, and
/// the stage routines.
///
/// Opt in to the rest: `freepruner/extras/` (presets, merged tokens,
/// positions), `freepruner/adapters/` (Eigen tensors, mdspan),
/// `freepruner/cuda.cuh` (the CUDA backend, under nvcc).

#include "config.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "options.hpp"
#include "qk.hpp"
#include "select.hpp"
#include "stream.hpp"
#include "traits.hpp"
#include "version.hpp"
#include "view.hpp"
