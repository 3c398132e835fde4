# The attributes of a `stdenv.mkDerivation` call that mean nothing for
# `mkBinaryCache`, whose builder is one program: no stdenv, no shell, no
# script. Each name gives the reason, and what to do instead, for the error
# that reading or setting it is (see mk-binary-cache.nix). nixpkgs' own
# function is a stdenv build, which has some of them (`nativeBuildInputs`,
# `buildCommand`), and overrides written for it read or extend them.
let
  alone = "the cache is written by the mk-binary-cache program alone, with no stdenv and no shell";
  instead = "do it in a derivation of your own that takes the cache as an input (such as runCommand)";
  dependencies = "${alone}, so no build input would be used. To put store paths into the cache, add them to rootPaths; to run a tool on the cache, ${instead}";
  script = "${alone}, so no script, phase or hook would run. To change what the cache holds, set its options (rootPaths, exclude, compression, …); to change its files afterwards, ${instead}";
  withReason =
    reason: names:
    map (name: {
      inherit name;
      value = reason;
    }) names;
in
builtins.listToAttrs (
  withReason dependencies [
    "nativeBuildInputs"
    "buildInputs"
    "propagatedNativeBuildInputs"
    "propagatedBuildInputs"
    "depsBuildBuild"
    "depsBuildBuildPropagated"
    "depsBuildTarget"
    "depsBuildTargetPropagated"
    "depsHostHost"
    "depsHostHostPropagated"
    "depsTargetTarget"
    "depsTargetTargetPropagated"
    "nativeCheckInputs"
    "checkInputs"
    "nativeInstallCheckInputs"
    "installCheckInputs"
  ]
  ++ withReason script (
    [
      "buildCommand"
      "phases"
      "src"
      "srcs"
      "sourceRoot"
      "patches"
      "configureFlags"
      "makeFlags"
      "buildFlags"
      "checkFlags"
      "installFlags"
      "cmakeFlags"
      "mesonFlags"
    ]
    ++ [
      "unpackPhase"
      "preUnpack"
      "postUnpack"
      "patchPhase"
      "prePatch"
      "postPatch"
      "configurePhase"
      "preConfigure"
      "postConfigure"
      "buildPhase"
      "preBuild"
      "postBuild"
      "checkPhase"
      "preCheck"
      "postCheck"
      "installPhase"
      "preInstall"
      "postInstall"
      "fixupPhase"
      "preFixup"
      "postFixup"
      "installCheckPhase"
      "preInstallCheck"
      "postInstallCheck"
      "distPhase"
      "preDist"
      "postDist"
    ]
  )
)
