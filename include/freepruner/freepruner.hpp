#pragma once
/// \file freepruner.hpp
/// The one include for host code: views, options, `select` on the Eigen CPU
/// backend, the Q/K path, the streaming `pruner`, presets, merged tokens and
/// positions.
/// Opt-in adapters live in `freepruner/adapters/`.

#include "config.hpp"
#include "error.hpp"
#include "merge.hpp"
#include "options.hpp"
#include "positions.hpp"
#include "presets.hpp"
#include "qk.hpp"
#include "select.hpp"
#include "stream.hpp"
#include "traits.hpp"
#include "version.hpp"
#include "view.hpp"
