"""The Faust app: channel topics in, unified customer timeline out."""
