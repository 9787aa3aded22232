#pragma once
/// \file freepruner.hpp
/// The one include for host code: views, options, and `select` on the Eigen
/// CPU backend. Opt-in adapters live in `freepruner/adapters/`.

#include "config.hpp"
#include "error.hpp"
#include "options.hpp"
#include "select.hpp"
#include "traits.hpp"
#include "version.hpp"
#include "view.hpp"
