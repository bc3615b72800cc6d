// swift-tools-version:5.9
// Kestrel for iOS (and macOS): the Swift API (Sources/Kestrel) over the C ABI (Sources/CKestrel:
// module.modulemap over capi/include/kestrel.h) and the Rust static library for the device and
// the simulator (KestrelFFI.xcframework: ./build-xcframework.sh on macOS builds it first).
import PackageDescription

let package = Package(
    name: "Kestrel",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Kestrel", targets: ["Kestrel"]),
    ],
    targets: [
        // libkestrel_capi.a per slice: ios-arm64, ios-arm64-simulator, macos-arm64.
        .binaryTarget(name: "KestrelFFI", path: "KestrelFFI.xcframework"),
        .target(name: "CKestrel", dependencies: ["KestrelFFI"], path: "Sources/CKestrel"),
        .target(
            name: "Kestrel",
            dependencies: ["CKestrel"],
            path: "Sources/Kestrel",
            linkerSettings: [
                // What the Rust library needs from the system (wgpu's Metal back end and std),
                // as `rustc --print native-static-libs` lists it for aarch64-apple-ios.
                .linkedFramework("Metal"),
                .linkedFramework("QuartzCore"),
                .linkedFramework("CoreGraphics"),
                .linkedFramework("CoreFoundation"),
                .linkedFramework("Foundation"),
                .linkedLibrary("objc"),
                .linkedLibrary("iconv"),
            ]
        ),
    ]
)
