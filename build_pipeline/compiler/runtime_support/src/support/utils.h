/*
 * Lantern: the runtime files Lantern compiles include this header but use
 * nothing from it beyond standard headers.  Written for Lantern.
 */
#ifndef TVM_SUPPORT_UTILS_H_
#define TVM_SUPPORT_UTILS_H_

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#endif  // TVM_SUPPORT_UTILS_H_
