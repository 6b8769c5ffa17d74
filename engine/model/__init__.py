"""SAM 2 model components, one file each. Stateless modules; state lives in the tracker."""
