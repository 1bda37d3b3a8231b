"""The evaluation of the learned optimizer against the baselines, in parts: ``common`` (shared names), ``run``
(running every optimizer), ``quality`` (the issue's criteria) and ``report`` (tables, figure, files).
`zol2l_ext.evaluate` gathers their public names; this package's own namespace stays empty, so that a module
importing one part (as `criteria` imports ``common``) does not load the others."""
