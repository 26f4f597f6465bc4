//! `ferrograd-derive`: `#[derive(Module)]`, which reads a model's parameter tree off its
//! struct's fields.
//!
//! Use it through `ferrograd_nn::Module` (or `ferrograd::prelude::Module`), which brings the trait
//! and the derive together, as `serde::Serialize` does. The expansion calls into
//! `ferrograd_nn`'s hidden support module: a field's role is found by its type (through traits,
//! since a macro sees only syntax), so type aliases and nested containers work, and a field that
//! is neither a parameter nor a module is a compile error that says how to mark it.

use proc_macro::TokenStream;
use proc_macro2::{TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, parse_quote, Data, DeriveInput, Fields, Generics, Ident, Path, Type, TypeParamBound,
    WherePredicate,
};

/// Derives `ferrograd_nn::Module` from a struct's fields.
///
/// Every field is part of the model unless marked, and is classified by its type:
///
/// | field type | role | names |
/// |---|---|---|
/// | `Param<F>` | parameter | `weight` |
/// | `Option<Param<F>>` | parameter when `Some` | `bias` |
/// | a `Module<F>` (derived or not, `Box<dyn Module<F>>` too) | submodule | `encoder.weight` |
/// | `Vec`, `Option` or array of modules, nested | submodules | `layers.0.linear1.weight` |
///
/// Tuple structs name their fields `0`, `1`, ...
///
/// Field attributes:
/// - `#[module(skip)]`: not part of the tree (sizes, options, generators, caches).
/// - `#[module(buffer)]`: a `Param<F>` (or `Option<Param<F>>`) saved in the `state_dict` but
///   not trained, such as BatchNorm's `running_mean`.
/// - `#[module(training)]`: an `AtomicBool` (or any `TrainingFlag`) that `train()`/`eval()` set.
/// - `#[module(flatten)]`: the field's modules are named as the struct's own (`0.weight`, not
///   `layers.0.weight`), as in a container like `Sequential`.
///
/// A field with none of these roles is a compile error, so a submodule cannot be forgotten (and
/// then silently never trained, saved or switched to eval mode).
///
/// Struct attributes:
/// - `#[module(forward = method)]`: `Module::forward` calls the inherent `method` (default:
///   the inherent `forward`), which takes `&Var<F>` and returns `Var<F>`. A missing inherent
///   method is a compile error, never a `Module::forward` that calls itself.
/// - `#[module(forward = none)]`: the module has no single-input form (it takes several
///   inputs); `Module::forward` panics naming the type. Its own methods keep their natural
///   signatures, and it is still a part of the tree wherever it sits.
/// - `#[module(float = f64)]`: the float type. By default it is the struct's type parameter
///   bounded by `Float` (as in `struct Block<F: Float = f32>`), else `f32`.
/// - `#[module(any_float)]`: a module for every float type (a stateless layer, or one whose
///   modules are all such); its inherent forward is generic over `F: Float`.
/// - `#[module(crate = path)]`: where `ferrograd_nn` is, if not at `::ferrograd_nn` (the
///   `ferrograd` facade's re-export sets it already).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use ferrograd_autograd::{Param, Var};
/// use ferrograd_nn::{layers::{Dropout, Linear}, Module};
/// use ferrograd_tensor::{Float, Tensor};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// #[derive(Module)]
/// struct Encoder<F: Float = f32> {
///     layers: Vec<Linear<F>>,
///     norm: Option<Linear<F>>,
///     heads: [Linear<F>; 2],
///     drop: Dropout,
///     #[module(buffer)]
///     step: Param<F>,
///     #[module(training)]
///     training: AtomicBool,
///     #[module(skip)]
///     hidden: usize,
/// }
///
/// impl<F: Float> Encoder<F> {
///     fn forward(&self, x: &Var<F>) -> Var<F> {
///         let h = self.layers.iter().fold(x.clone(), |h, l| l.forward(&h).relu());
///         &self.heads[0].forward(&self.drop.forward(&h)) + &self.heads[1].forward(&h)
///     }
/// }
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let enc = Encoder::<f32> {
///     layers: vec![Linear::new(3, 4, &mut rng), Linear::new(4, 4, &mut rng)],
///     norm: None,
///     heads: [Linear::new(4, 2, &mut rng), Linear::new(4, 2, &mut rng)],
///     drop: Dropout::new(0.1, 0),
///     step: Param::new(Tensor::zeros(&[1])),
///     training: AtomicBool::new(true),
///     hidden: 4,
/// };
/// let names: Vec<String> = enc.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[..3], ["layers.0.weight", "layers.0.bias", "layers.1.weight"]);
/// assert_eq!(names[4..], ["heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias"]);
/// assert!(enc.state_dict().contains_key("step"));
/// enc.eval();
/// assert!(!enc.training.load(Ordering::Relaxed) && !enc.drop.is_training());
/// assert_eq!(enc.forward(&Var::constant(Tensor::ones(&[5, 3]))).shape(), &[5, 2]);
/// ```
///
/// A field that is neither a parameter nor a module, and is not marked, does not compile:
///
/// ```compile_fail,E0277
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Linear, Module};
/// #[derive(Module)]
/// struct Net {
///     fc: Linear,
///     hidden: usize, // error: neither a parameter nor a module; mark it #[module(skip)]
/// }
/// impl Net {
///     fn forward(&self, x: &Var) -> Var { self.fc.forward(x) }
/// }
/// ```
///
/// Nor does a struct whose `Module::forward` would have no inherent method to call:
///
/// ```compile_fail,E0034
/// use ferrograd_nn::{layers::Linear, Module};
/// #[derive(Module)]
/// struct Net {
///     fc: Linear,
/// }
/// ```
///
/// Nor an attribute the derive does not know:
///
/// ```compile_fail
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::{layers::Linear, Module};
/// #[derive(Module)]
/// struct Net {
///     #[module(frozen)] // error: unknown `#[module]` field attribute `frozen`
///     fc: Linear,
/// }
/// impl Net {
///     fn forward(&self, x: &Var) -> Var { self.fc.forward(x) }
/// }
/// ```
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input, quote!(::ferrograd_nn)).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// `#[derive(Module)]` as re-exported by the `ferrograd` facade: the expansion names
/// `::ferrograd::nn`, so a crate that depends on `ferrograd` alone can use it.
#[doc(hidden)]
#[proc_macro_derive(FacadeModule, attributes(module))]
pub fn derive_module_in_facade(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input, quote!(::ferrograd::nn)).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// What `Module::forward` does.
enum Forward {
    /// Calls this inherent method.
    Method(Ident),
    /// Panics: the module has no single-input form.
    None,
}

/// The struct-level `#[module(...)]` options.
struct StructOptions {
    float: Option<Type>,
    any_float: bool,
    forward: Forward,
    krate: Option<Path>,
}

/// What a field is in the tree.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A parameter or submodules, found by its type.
    Tree,
    Skip,
    Buffer,
    Training,
    Flatten,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Tree => "tree",
            Role::Skip => "skip",
            Role::Buffer => "buffer",
            Role::Training => "training",
            Role::Flatten => "flatten",
        }
    }
}

struct FieldInfo {
    /// How the expansion reads it: `self.name` or `self.0`.
    member: TokenStream2,
    /// Its name in the tree.
    name: String,
    ty: Type,
    role: Role,
}

fn module_attrs(attrs: &[syn::Attribute]) -> impl Iterator<Item = &syn::Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("module"))
}

fn struct_options(input: &DeriveInput) -> syn::Result<StructOptions> {
    let mut opts = StructOptions {
        float: None,
        any_float: false,
        forward: Forward::Method(format_ident!("forward")),
        krate: None,
    };
    let mut forward_seen = false;
    for attr in module_attrs(&input.attrs) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("float") {
                opts.float = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("any_float") {
                opts.any_float = true;
            } else if meta.path.is_ident("forward") {
                if forward_seen {
                    return Err(meta.error("`forward` given twice"));
                }
                forward_seen = true;
                let method: Ident = meta.value()?.parse()?;
                opts.forward = if method == "none" { Forward::None } else { Forward::Method(method) };
            } else if meta.path.is_ident("crate") {
                opts.krate = Some(meta.value()?.parse()?);
            } else {
                let name = meta.path.to_token_stream().to_string().replace(' ', "");
                return Err(meta.error(format!(
                    "unknown `#[module]` struct attribute `{name}`: expected `forward = method`, `forward = none`, `float = type`, `any_float` or `crate = path`"
                )));
            }
            Ok(())
        })?;
    }
    if opts.any_float {
        if let Some(float) = &opts.float {
            return Err(syn::Error::new_spanned(float, "`float = ...` and `any_float` exclude each other"));
        }
    }
    Ok(opts)
}

fn field_role(field: &syn::Field) -> syn::Result<Role> {
    let mut role = Role::Tree;
    for attr in module_attrs(&field.attrs) {
        attr.parse_nested_meta(|meta| {
            let found = if meta.path.is_ident("skip") {
                Role::Skip
            } else if meta.path.is_ident("buffer") {
                Role::Buffer
            } else if meta.path.is_ident("training") {
                Role::Training
            } else if meta.path.is_ident("flatten") {
                Role::Flatten
            } else {
                let name = meta.path.to_token_stream().to_string().replace(' ', "");
                return Err(meta.error(format!(
                    "unknown `#[module]` field attribute `{name}`: expected `skip`, `buffer`, `training` or `flatten`"
                )));
            };
            if role != Role::Tree {
                return Err(meta.error(format!(
                    "a field has one role: `{}` and `{}` exclude each other",
                    role.name(),
                    found.name()
                )));
            }
            role = found;
            Ok(())
        })?;
    }
    Ok(role)
}

fn fields(data: &Data, ident: &Ident) -> syn::Result<Vec<FieldInfo>> {
    let fields = match data {
        Data::Struct(s) => &s.fields,
        _ => return Err(syn::Error::new_spanned(ident, "`#[derive(Module)]` works on structs only")),
    };
    let mut out = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let iter: Box<dyn Iterator<Item = (usize, &syn::Field)>> = match fields {
        Fields::Named(f) => Box::new(f.named.iter().enumerate()),
        Fields::Unnamed(f) => Box::new(f.unnamed.iter().enumerate()),
        Fields::Unit => Box::new(std::iter::empty()),
    };
    for (i, field) in iter {
        let (member, name) = match &field.ident {
            Some(id) => (quote!(#id), id.unraw().to_string()),
            None => {
                let index = syn::Index::from(i);
                (quote!(#index), i.to_string())
            }
        };
        match field_role(field) {
            Ok(role) => out.push(FieldInfo { member, name, ty: field.ty.clone(), role }),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The struct's type parameter bounded by `Float` (inline or in the where clause), if any.
fn float_param(generics: &Generics) -> syn::Result<Option<Ident>> {
    let is_float = |b: &TypeParamBound| matches!(b, TypeParamBound::Trait(t) if t.path.segments.last().is_some_and(|s| s.ident == "Float"));
    let mut found: Vec<Ident> =
        generics.type_params().filter(|p| p.bounds.iter().any(is_float)).map(|p| p.ident.clone()).collect();
    if let Some(wc) = &generics.where_clause {
        for pred in &wc.predicates {
            if let WherePredicate::Type(pt) = pred {
                if let Type::Path(tp) = &pt.bounded_ty {
                    if let Some(id) = tp.path.get_ident() {
                        let is_param = generics.type_params().any(|p| &p.ident == id);
                        if is_param && pt.bounds.iter().any(is_float) && !found.contains(id) {
                            found.push(id.clone());
                        }
                    }
                }
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(syn::Error::new_spanned(
            &found[1],
            "several type parameters are bounded by `Float`: pick the module's with `#[module(float = F)]`",
        )),
    }
}

fn mentions(tokens: TokenStream2, ident: &Ident) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => &i == ident,
        TokenTree::Group(g) => mentions(g.stream(), ident),
        _ => false,
    })
}

fn expand(input: &DeriveInput, default_root: TokenStream2) -> syn::Result<TokenStream2> {
    // Every attribute error at once, not only the first.
    let (opts, fields) = match (struct_options(input), fields(&input.data, &input.ident)) {
        (Ok(o), Ok(f)) => (o, f),
        (Err(mut e), Err(f)) => {
            e.combine(f);
            return Err(e);
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let root = opts.krate.as_ref().map_or(default_root, |p| quote!(#p));
    let support = quote!(#root::__private);
    let name = &input.ident;

    // The float type of the impl, and the generics it needs.
    let mut generics = input.generics.clone();
    let float_ident = float_param(&input.generics)?;
    let float: Type = if opts.any_float {
        generics.params.push(parse_quote!(__F: #support::Float));
        parse_quote!(__F)
    } else if let Some(t) = &opts.float {
        t.clone()
    } else if let Some(id) = &float_ident {
        parse_quote!(#id)
    } else {
        parse_quote!(::core::primitive::f32)
    };
    // A type parameter inside a field of the tree must be a module (as serde bounds the
    // parameters of serialised fields).
    let tree_types: Vec<&Type> =
        fields.iter().filter(|f| matches!(f.role, Role::Tree | Role::Flatten)).map(|f| &f.ty).collect();
    let module_params: Vec<Ident> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .filter(|id| !matches!(&float, Type::Path(t) if t.path.is_ident(id)))
        .filter(|id| tree_types.iter().any(|t| mentions(t.to_token_stream(), id)))
        .collect();
    {
        let wc = generics.make_where_clause();
        for p in &module_params {
            wc.predicates.push(parse_quote!(#p: #root::Module<#float>));
        }
    }
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let (_, ty_generics, _) = input.generics.split_for_impl();

    // The visit of the tree's fields, shared by params, buffers and children (one place, so a
    // bad field is reported once).
    let visits: Vec<TokenStream2> = fields
        .iter()
        .filter_map(|f| {
            let (member, label, ty) = (&f.member, &f.name, &f.ty);
            let span = ty.span();
            // Only the callee carries the field's span, so that a type error points at the field;
            // the arguments keep the expansion's own hygiene.
            match f.role {
                Role::Tree => {
                    let callee = quote_spanned!(span=> #support::field::<#float, _, #ty>);
                    Some(quote!(#callee(&this.#member, #label, tree);))
                }
                Role::Buffer => {
                    let callee = quote_spanned!(span=> #support::buffer::<#float, #ty>);
                    Some(quote!(#callee(&this.#member, #label, tree);))
                }
                Role::Flatten => {
                    let callee = quote_spanned!(span=> #support::flatten::<#float, _, #ty>);
                    Some(quote!(#callee(&this.#member, tree);))
                }
                Role::Skip | Role::Training => None,
            }
        })
        .collect();
    let training: Vec<TokenStream2> = fields
        .iter()
        .filter(|f| f.role == Role::Training)
        .map(|f| {
            let (member, ty) = (&f.member, &f.ty);
            let callee = quote_spanned!(ty.span()=> #support::set_training::<#ty>);
            quote!(#callee(&self.#member, training);)
        })
        .collect();

    let forward_body = match &opts.forward {
        Forward::Method(method) => {
            // Inherent methods win over trait methods, so `Self::method` is the struct's own when
            // it exists. When it does not, it would be `Module::forward` itself, recursing
            // forever: the fallback trait declared here makes that a compile error instead
            // (ambiguous with `Module::forward` when that trait is in scope, and otherwise an
            // unsatisfiable bound whose message says what to write).
            let fallback = format_ident!("derive_Module_needs_an_inherent_fn_{}", method.unraw());
            // The method's name carries the struct's (or the attribute's) span, so that a missing
            // method is reported there.
            let span = if method == "forward" { name.span() } else { method.span() };
            let mut spanned = method.clone();
            spanned.set_span(span);
            let call = quote!(Self::#spanned(self, input));
            quote! {
                #[allow(non_camel_case_types, dead_code)]
                trait #fallback {
                    fn #method<__A, __R>(&self, _: __A) -> __R
                    where
                        Self: #support::MissingInherentForward,
                    {
                        ::core::unreachable!()
                    }
                }
                impl<__T: ?::core::marker::Sized> #fallback for __T {}
                #call
            }
        }
        Forward::None => quote! {
            let _ = input;
            #support::no_single_input::<Self>()
        },
    };

    let tree_methods = if visits.is_empty() {
        quote!()
    } else {
        quote! {
            fn params(&self) -> ::std::vec::Vec<(&::core::primitive::str, &#support::Param<#float>)> {
                let mut tree = #support::Tree::new();
                __ferrograd_module_tree(self, &mut tree);
                tree.params
            }

            fn buffers(&self) -> ::std::vec::Vec<(&::core::primitive::str, &#support::Param<#float>)> {
                let mut tree = #support::Tree::new();
                __ferrograd_module_tree(self, &mut tree);
                tree.buffers
            }

            fn children(&self) -> ::std::vec::Vec<(::std::string::String, &dyn #root::Module<#float>)> {
                let mut tree = #support::Tree::new();
                __ferrograd_module_tree(self, &mut tree);
                tree.children
            }
        }
    };
    let tree_fn = if visits.is_empty() {
        quote!()
    } else {
        let mut visit_generics = generics.clone();
        visit_generics.params.insert(0, parse_quote!('__a));
        let (visit_impl, _, visit_where) = visit_generics.split_for_impl();
        quote! {
            fn __ferrograd_module_tree #visit_impl(this: &'__a #name #ty_generics, tree: &mut #support::Tree<'__a, #float>) #visit_where {
                #(#visits)*
            }
        }
    };
    let training_method = if training.is_empty() {
        quote!()
    } else {
        quote! {
            fn set_training_self(&self, training: bool) {
                #(#training)*
            }
        }
    };

    Ok(quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #root::Module<#float> for #name #ty_generics #where_clause {
                #[track_caller]
                fn forward(&self, input: &#support::Var<#float>) -> #support::Var<#float> {
                    #forward_body
                }

                #tree_methods
                #training_method
            }

            #tree_fn
        };
    })
}
