#pragma once
// Selectors: by glob, regex, name, module type and tensor predicates, composed with & | ! -.
#include <graft/select/concepts.hpp>
#include <graft/select/compose.hpp>
#include <graft/select/glob.hpp>
#include <graft/select/regex.hpp>
#include <graft/select/basic.hpp>
#include <graft/select/module.hpp>
#include <graft/select/tensor.hpp>
#include <graft/select/select.hpp>
#include <graft/select/explain.hpp>
