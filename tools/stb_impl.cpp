// stb's code, compiled here with the tool's settings rather than taken from
// a prebuilt libstb: only the formats picture.hpp checks before decoding
// (PNG, JPEG, BMP, PNM), no stdio (files are read and written by the tool,
// whose checks see every error), and zeroed allocations, so that no path
// through a decoder can hand back uninitialised pixels.
#include <cstdlib>

#define STBI_MALLOC(size) std::calloc(1, size)
#define STBI_REALLOC(p, size) std::realloc(p, size)
#define STBI_FREE(p) std::free(p)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>
