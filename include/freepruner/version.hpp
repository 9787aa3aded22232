#pragma once
/// \file version.hpp
/// freepruner's version, as numbers and as a string.

#define FREEPRUNER_VERSION_MAJOR 0
#define FREEPRUNER_VERSION_MINOR 1
#define FREEPRUNER_VERSION_PATCH 0
#define FREEPRUNER_VERSION_STRING "0.1.0"
/// One integer, comparable with `>=`: major * 10000 + minor * 100 + patch.
#define FREEPRUNER_VERSION (FREEPRUNER_VERSION_MAJOR * 10000 + FREEPRUNER_VERSION_MINOR * 100 + FREEPRUNER_VERSION_PATCH)
