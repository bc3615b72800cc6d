// Kestrel's Android library (module :kestrel). Build the native libraries first
// (./build-jni.sh, needs the NDK), then ./gradlew :kestrel:assembleRelease; see README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "kestrel-android"
include(":kestrel")
