// The C target's one source file (SwiftPM builds no target without one): it checks at compile
// time that the header is the ABI version the Swift API was written for. The functions
// themselves are in libkestrel_capi.a (KestrelFFI.xcframework, built by build-xcframework.sh).
#include "kestrel.h"

_Static_assert(KESTREL_ABI_VERSION == 1, "the Swift API is written for Kestrel's C ABI version 1");
