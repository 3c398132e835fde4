# `meta` for the result of `mkBinaryCache`, as `stdenv.mkDerivation` fills it
# in (nixpkgs' pkgs/stdenv/generic/check-meta.nix, read for its behaviour):
# `name`, `outputsToInstall`, `position`, the maintainers, what nixpkgs'
# checks find (`unfree`, `broken`, `unsupported`, `insecure`) and their
# verdict under `config`, `available`. Works without nixpkgs: `lib` is only
# needed to match platform patterns (attribute sets) in `meta.platforms`.
{
  # nixpkgs' lib, or null.
  lib,
  # nixpkgs' configuration (`allowUnfree`, `allowBroken`, …), or { }.
  config,
  # What `meta.platforms` is checked against: `system` at least.
  hostPlatform,
}:

let
  aTypeOf = v: if builtins.isAttrs v then "an attribute set" else "a ${builtins.typeOf v}";

  unique = builtins.foldl' (kept: x: if builtins.elem x kept then kept else kept ++ [ x ]) [ ];

  # Whether `meta` rules `hostPlatform` out: lib matches attribute set
  # patterns too (`{ kernel.name = "linux"; }`); without lib, only system
  # names can be matched.
  unsupportedBy =
    meta:
    if lib != null then
      !lib.meta.availableOn hostPlatform { inherit meta; }
    else
      let
        matches =
          elem:
          if builtins.isString elem then
            elem == hostPlatform.system
          else
            throw "mkBinaryCache: meta.platforms and meta.badPlatforms can hold only system names when the function is called without lib, got ${aTypeOf elem}";
      in
      (meta ? platforms && !builtins.any matches meta.platforms)
      || builtins.any matches (meta.badPlatforms or [ ]);

  # Whether `config` (or its environment variable) allows what `setting`
  # names.
  allowed = setting: variable: config.${setting} or false || builtins.getEnv variable == "1";

  # `{ name = value; }` where `value` is not null, else `{ }`.
  unlessNull = name: value: if value == null then { } else { ${name} = value; };
in

# The final attributes of a cache (`name`, `meta`, perhaps `pos`) give
# `{ meta; refusal; }`: `refusal` is why the cache is not available, and
# which setting would allow it, or null.
attrs:
let
  meta = attrs.meta;
  pos =
    attrs.pos or (
      if meta.description or null != null then
        builtins.unsafeGetAttrPos "description" meta
      else
        builtins.unsafeGetAttrPos "name" attrs
    );

  license = meta.license or [ ];
  unfree =
    if builtins.isList license then
      builtins.any (l: !(l.free or false)) license
    else if builtins.isAttrs license then
      !(license.free or true)
    else
      # A license given as a string is not known to be unfree.
      false;
  broken = meta.broken or false;
  unsupported = unsupportedBy meta;
  insecure = meta.knownVulnerabilities or [ ] != [ ];

  unfreeAllowed =
    allowed "allowUnfree" "NIXPKGS_ALLOW_UNFREE"
    || builtins.elem (builtins.parseDrvName attrs.name).name (config.allowUnfreePackages or [ ])
    || (builtins.isFunction (config.allowUnfreePredicate or null) && config.allowUnfreePredicate attrs);
  insecureAllowed =
    builtins.getEnv "NIXPKGS_ALLOW_INSECURE" == "1"
    || builtins.elem attrs.name (config.permittedInsecurePackages or [ ])
    || (builtins.isFunction (config.allowInsecurePredicate or null) && config.allowInsecurePredicate attrs);

  # Why the cache is not available, each with what would allow it.
  refusals =
    builtins.filter (reason: reason != null) [
      (
        if unfree && !unfreeAllowed then
          "has an unfree license (meta.license); allow it with config.allowUnfree = true, config.allowUnfreePredicate or NIXPKGS_ALLOW_UNFREE=1"
        else
          null
      )
      (
        if broken && !allowed "allowBroken" "NIXPKGS_ALLOW_BROKEN" then
          "is marked broken (meta.broken); allow it with config.allowBroken = true or NIXPKGS_ALLOW_BROKEN=1"
        else
          null
      )
      (
        if unsupported && !allowed "allowUnsupportedSystem" "NIXPKGS_ALLOW_UNSUPPORTED_SYSTEM" then
          "is not available on ${hostPlatform.system} (meta.platforms, meta.badPlatforms); allow it with config.allowUnsupportedSystem = true or NIXPKGS_ALLOW_UNSUPPORTED_SYSTEM=1"
        else
          null
      )
      (
        if insecure && !insecureAllowed then
          "is marked insecure (meta.knownVulnerabilities: ${builtins.concatStringsSep ", " meta.knownVulnerabilities}); allow it with config.permittedInsecurePackages = [ \"${attrs.name}\" ] or NIXPKGS_ALLOW_INSECURE=1"
        else
          null
      )
    ];
  position = if pos == null then null else "${pos.file}:${toString pos.line}";
in
{
  refusal =
    if refusals == [ ] then
      null
    else
      "mkBinaryCache: refusing to evaluate ${attrs.name}${
        if position == null then "" else " (${position})"
      }, because it ${builtins.head refusals}";

  # The caller's `meta` is kept, but not over the findings.
  meta = {
    inherit (attrs) name;
    outputsToInstall = [ "out" ];
  }
  // unlessNull "maintainersPosition" (builtins.unsafeGetAttrPos "maintainers" meta)
  // unlessNull "teamsPosition" (builtins.unsafeGetAttrPos "teams" meta)
  // meta
  // unlessNull "position" position
  // {
    maintainers = unique (
      meta.maintainers or [ ] ++ builtins.concatMap (team: team.members or [ ]) (meta.teams or [ ])
    );
    nonTeamMaintainers = meta.nonTeamMaintainers or meta.maintainers or [ ];
    inherit
      unfree
      broken
      unsupported
      insecure
      ;
    available = refusals == [ ];
  };
}
